"""Settings come from GPUFLEET_* variables and fail fast with a message that names the variable."""

from __future__ import annotations

import pydantic
import pytest

from gpufleet import settings


def test_reads_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_GRACE_PERIOD_SECONDS", "90")
    monkeypatch.setenv("GPUFLEET_AUTH_MODE", "static")
    monkeypatch.setenv("GPUFLEET_STATIC_TOKENS_FILE", "/etc/gpufleet/tokens")
    loaded = settings.Settings()
    assert loaded.grace_period_seconds == 90
    assert loaded.auth_mode is settings.AuthMode.STATIC


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"GPUFLEET_GRACE_PERIOD_SECONDS": "-5"}, "grace_period_seconds"),
        ({"GPUFLEET_AUTH_MODE": "ldap"}, "auth_mode"),
        ({"GPUFLEET_AUTH_MODE": "static"}, "GPUFLEET_STATIC_TOKENS_FILE"),
        ({"GPUFLEET_TLS_CERT_FILE": "/tls/tls.crt"}, "GPUFLEET_TLS_KEY_FILE"),
        ({"GPUFLEET_PAGE_SIZE_DEFAULT": "500"}, "GPUFLEET_PAGE_SIZE_MAX"),
    ],
)
def test_rejects_bad_settings_clearly(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], complaint: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=complaint):
        settings.Settings()


@pytest.mark.parametrize(("grace", "interval", "warns"), [(50, 10, False), (40, 10, False), (30, 10, True)])
def test_warns_when_grace_period_invites_flapping(grace: float, interval: float, warns: bool) -> None:
    loaded = settings.Settings(grace_period_seconds=grace, heartbeat_interval_seconds=interval)
    assert (loaded.flapping_warning() is not None) is warns
