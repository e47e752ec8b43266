"""The CRDs the chart installs are the generated ones, byte for byte, Kopf's peering CRD included.

Helm installs crds/ on first install and never upgrades it, so what is in there must be exactly
what `gpufleet crds` generates from the models; `helm_python` is asked what it would install,
so a file Helm would skip (or pick up) counts too.
"""

from __future__ import annotations

import helm_python as helm
import yaml

from gpufleet.api import crds

from . import rendering

#: Kopf's own peering CRD: without it the operator's mandatory peering keeps every watch paused.
KOPF_PEERING = "kopfpeerings.kopf.dev.yaml"


def _helm_crds() -> dict[str, str]:
    with helm.Chart.load(rendering.CHART) as chart:
        return {entry["name"].removeprefix("crds/"): entry["data"] for entry in chart.crds}


def test_the_chart_installs_the_generated_crds() -> None:
    generated = {name: crds.render(crd) for name, crd in crds.all_crds().items()}
    installed = _helm_crds()
    assert KOPF_PEERING in generated
    assert set(installed) == set(generated)
    for name, text in generated.items():
        assert installed[name] == text, (
            f"{name} drifted: run `gpufleet crds --output-dir crds --output-dir charts/gpufleet/crds`"
        )


def test_the_chart_crds_equal_the_top_level_crds() -> None:
    top_level = {path.name: path.read_text(encoding="utf-8") for path in (rendering.REPO / "crds").glob("*.yaml")}
    chart = rendering.chart_crds()
    assert top_level
    assert chart == top_level


def test_the_peering_crd_serves_what_the_operator_uses() -> None:
    from gpufleet.controller import leadership

    crd = yaml.safe_load(rendering.chart_crds()[KOPF_PEERING])
    assert crd["spec"]["group"] == leadership.PEERING_GROUP
    assert crd["spec"]["names"]["plural"] == leadership.PEERING_PLURAL
    assert crd["spec"]["scope"] == "Namespaced"  # the operator runs Kopf with namespaces=[its own]
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (leadership.PEERING_VERSION, True, True)
    # Kopf patches peers into .status through the main endpoint: no status subresource may exist
    assert "subresources" not in version
