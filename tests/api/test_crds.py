"""The committed CRDs are the models' output, and a real CRD schema validator accepts them."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpufleet.api import crds

REPO = pathlib.Path(__file__).resolve().parents[2]
CRD_DIRS = [REPO / "crds", REPO / "charts" / "gpufleet" / "crds"]
SUPPORTED_KUBERNETES = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda d: str(d.relative_to(REPO)))
def test_committed_crds_match_the_models(directory: pathlib.Path) -> None:
    if not directory.exists():
        pytest.skip(f"{directory} does not exist yet")
    expected = {name: crds.render(crd) for name, crd in crds.all_crds().items()}
    committed = {path.name: path.read_text(encoding="utf-8") for path in directory.glob("*.yaml")}
    regenerate = "gpufleet crds --output-dir crds --output-dir charts/gpufleet/crds"
    assert committed == expected, f"CRDs drifted from the models: run `{regenerate}`"


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
@pytest.mark.parametrize("name", sorted(crds.all_crds()))
def test_crds_validate_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(crds.all_crds()[name], version, strict=True)


def _schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.get("properties", {}).items():
            yield from _schema_nodes(value, f"{path}.{key}")
        if "items" in node:
            yield from _schema_nodes(node["items"], f"{path}[]")


@pytest.mark.parametrize("name", sorted(crds.gpufleet_crds()))
def test_schemas_are_structural(name: str) -> None:
    """What the API server's structural-schema check rejects, and kubernetes-validate cannot see."""
    schema = crds.gpufleet_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _schema_nodes(schema):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert "$ref" not in node and "$defs" not in node, f"{path} is not inlined"
        assert not ("properties" in node and "additionalProperties" in node), f"{path} mixes both"
        for option in node.get("anyOf", []) + node.get("oneOf", []):
            assert "type" not in option and "description" not in option, f"{path} types inside anyOf"
        if node["type"] != "object" or path.count(".") > 1:
            assert node.get("description") or path in {".metadata"}, f"{path} is undocumented"


def test_every_spec_and_status_field_is_documented() -> None:
    for crd in crds.gpufleet_crds().values():
        properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for part in ("spec", "status"):
            for field, schema in properties[part]["properties"].items():
                assert schema.get("description"), f"{crd['metadata']['name']} {part}.{field} has no description"


def test_printer_columns_show_what_operators_look_at() -> None:
    columns = {
        crd["spec"]["names"]["plural"]: [
            column["name"].upper() for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        ]
        for crd in crds.gpufleet_crds().values()
    }
    for expected in ["STATUS", "HEALTH", "IP", "CPU", "MEMORY", "GPUS", "REPORTED", "AGE"]:
        assert expected in columns["hosts"]
    for expected in ["HOST", "INDEX", "MODEL", "MEMORY", "STATUS", "ALLOCATED-TO", "TEMP", "UTIL"]:
        assert expected in columns["gpus"]


@pytest.mark.parametrize("sample", sorted((REPO / "crds" / "samples").glob("*.yaml")), ids=lambda p: p.name)
def test_samples_are_valid_objects_of_the_models(sample: pathlib.Path) -> None:
    from gpufleet.api import gpu, host

    manifest = yaml.safe_load(sample.read_text(encoding="utf-8"))
    model = {"Host": host.HostSpec, "GPU": gpu.GPUSpec}[manifest["kind"]]
    model.model_validate(manifest["spec"])
