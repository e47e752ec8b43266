"""NOTES.txt, printed after `helm install`, tells the user how to reach the facade, get a token and see the leader."""

from __future__ import annotations

from . import rendering


def _notes(values_file: str) -> str:
    return rendering.rendered_file(rendering.CHART / "ci" / values_file)["gpufleet/templates/NOTES.txt"]


def test_kubernetes_auth_notes_issue_a_token_bound_to_the_admin_role() -> None:
    notes = _notes("default-values.yaml")
    assert "kubectl -n gpufleet-system port-forward svc/gpufleet-facade 8080:80" in notes
    assert "export GPUFLEET_URL=http://127.0.0.1:8080" in notes
    assert "--clusterrole=gpufleet-admin" in notes
    assert "create token fleet-admin" in notes


def test_static_auth_notes_read_the_token_secret_and_use_https_with_tls() -> None:
    notes = _notes("hardened-values.yaml")
    assert "port-forward svc/gpufleet-facade 8080:443" in notes
    assert "GPUFLEET_URL=https://" in notes
    assert "get secret gpufleet-facade-tokens -o jsonpath='{.data.tokens}' | base64 -d" in notes
    assert "create token" not in notes


def test_notes_state_the_grace_period_and_how_to_upgrade_crds() -> None:
    notes = _notes("kind-values.yaml")
    assert "offline after 20s without a heartbeat (agents heartbeat every 5s)" in notes
    assert "kubectl apply --server-side -f charts/gpufleet/crds/" in notes


def test_notes_say_how_to_see_the_leader() -> None:
    assert "kubectl -n gpufleet-system get lease gpufleet-operator" in _notes("default-values.yaml")
    assert "kubectl -n gpufleet-system get lease gpufleet-leader" in _notes("hardened-values.yaml")
    minimal = _notes("minimal-values.yaml")
    assert "get lease" not in minimal
    assert "operator.leaderElection=false" in minimal


def test_notes_say_where_the_facade_runs_and_as_whom() -> None:
    default = _notes("default-values.yaml")
    assert "Deployment gpufleet-facade under ServiceAccount gpufleet-facade of its own" in default
    minimal = _notes("minimal-values.yaml")  # facade.layout=sidecar
    assert "sidecar of the control-plane pods" in minimal
    assert "shares the operator's\n   ServiceAccount gpufleet-controlplane" in minimal
