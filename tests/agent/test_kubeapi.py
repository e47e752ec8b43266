"""How the agent finds the API server, and how API errors reach it."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from gpufleet_agent import kubeapi


def kubeconfig(tmp_path: pathlib.Path, user: dict[str, Any], server: str = "https://10.0.0.1:6443") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


async def test_exec_plugins_are_refused_with_the_user_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(kubeapi.ConfigError, match="'u' uses an exec"):
        kubeapi.connect(kubeconfig(tmp_path, {"exec": {"command": "aws"}}))


async def test_a_missing_kubeconfig_says_what_to_set(tmp_path: pathlib.Path) -> None:
    with pytest.raises(kubeapi.ConfigError, match="KUBECONFIG"):
        kubeapi.connect(str(tmp_path / "nope"))


async def test_a_kubeconfig_with_a_token_file_reaches_the_api(
    tmp_path: pathlib.Path, kube: Any, crds_installed: list[str]
) -> None:
    current = yaml.safe_load(kube.kubeconfig.read_text())
    user = current["users"][0]["user"]
    (tmp_path / "token").write_text(user.get("token", "") + "\n")
    api = kubeapi.connect(kubeconfig(tmp_path, {**user, "tokenFile": "token"}, server=kube.url))
    try:
        assert isinstance(await api.list(kubeapi.HOSTS), list)
    finally:
        await api.close()


async def test_api_errors_carry_status_and_reason(kube: Any, crds_installed: list[str]) -> None:
    api = kubeapi.connect(str(kube.kubeconfig))
    try:
        with pytest.raises(kubeapi.ApiError) as caught:
            await api.get(f"{kubeapi.HOSTS}/no-such-host-anywhere")
        assert caught.value.not_found and caught.value.reason == "NotFound"
    finally:
        await api.close()


async def test_an_unreachable_server_is_an_api_error_not_a_crash(tmp_path: pathlib.Path) -> None:
    api = kubeapi.connect(kubeconfig(tmp_path, {"token": "t"}, server="http://127.0.0.1:9"))
    try:
        with pytest.raises(kubeapi.ApiError, match="unreachable") as caught:
            await api.get(kubeapi.HOSTS)
        assert caught.value.status == 0
    finally:
        await api.close()
