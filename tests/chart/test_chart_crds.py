"""The CRDs the chart installs are the generated ones, byte for byte, and only gpufleet's own.

Helm installs crds/ on first install and never upgrades it, so what is in there must be exactly
what `gpufleet crds` generates from the models; `helm_python` is asked what it would install,
so a file Helm would skip (or pick up) counts too.
"""

from __future__ import annotations

import helm_python as helm
import yaml

from gpufleet.api import crds

from . import rendering


def _helm_crds() -> dict[str, str]:
    with helm.Chart.load(rendering.CHART) as chart:
        return {entry["name"].removeprefix("crds/"): entry["data"] for entry in chart.crds}


def test_the_chart_installs_the_generated_crds() -> None:
    generated = {name: crds.render(crd) for name, crd in crds.all_crds().items()}
    installed = _helm_crds()
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


def test_the_chart_installs_only_gpufleet_crds() -> None:
    """Leader election uses the built-in coordination.k8s.io/v1 Lease: no framework CRD ships.

    Kopf's `kopfpeerings.kopf.dev` did until the operator moved to a Lease; a leftover copy in
    crds/ would make Helm install a CRD nothing uses.
    """
    chart = rendering.chart_crds()
    assert chart
    for name, text in chart.items():
        crd = yaml.safe_load(text)
        assert crd["spec"]["group"] == "gpufleet.io", name
        assert name == f"{crd['metadata']['name']}.yaml"
