"""Running the facade: health, readiness, metrics, the OpenAPI document, caches that recover, TLS, shutdown."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from typing import Any

import aiohttp
import pytest

from gpufleet.facade import main, openapi, routes, schemas
from gpufleet.settings import Settings
from kube_emulator import Emulator
from tests.support.ports import free_port

from .conftest import StartFacade
from .helpers import HOSTS_PATH, VIEWER_TOKEN, Facade, K8s, eventually, self_signed, unique_ip, unique_name


async def _get(facade: Facade, path: str) -> tuple[int, str]:
    async with facade.http.get(facade.url + path) as response:
        return response.status, await response.text()


async def test_healthz_and_readyz_answer_once_synced(facade: Facade) -> None:
    assert await _get(facade, "/healthz") == (200, "ok")
    assert await _get(facade, "/readyz") == (200, "ok")


@pytest.mark.emulator
async def test_not_ready_and_reads_refused_until_the_caches_are_synced(
    start_facade: StartFacade, settings: Settings, emulator: Emulator, kube: Any
) -> None:
    from aiohttp import test_utils

    from gpufleet.facade import app as facade_app

    with emulator.unavailable("error"):
        app = facade_app.create_app(settings, kubeconfig=str(kube.kubeconfig))
        async with test_utils.TestServer(app) as server, aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/readyz")) as response:
                assert response.status == 503
            async with http.get(
                server.make_url("/api/v1/hosts"), headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
            ) as response:
                assert response.status == 503 and (await response.json())["code"] == 50302


async def test_metrics_count_requests_by_route_and_report_the_caches(facade: Facade) -> None:
    await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN)
    await facade.call("GET", "/api/v1/hosts/host-nothere", token=VIEWER_TOKEN)
    status, text = await _get(facade, "/metrics")
    assert status == 200
    assert 'gpufleet_facade_requests_total{method="GET",route="/api/v1/hosts",status="200"} 1.0' in text
    assert 'gpufleet_facade_requests_total{method="GET",route="/api/v1/hosts/{host_id}",status="404"} 1.0' in text
    assert 'gpufleet_facade_request_duration_seconds_count{method="GET",route="/api/v1/hosts"} 1.0' in text
    assert 'gpufleet_facade_cache_objects{resource="hosts"}' in text
    staleness = next(
        line
        for line in text.splitlines()
        if line.startswith('gpufleet_facade_cache_staleness_seconds{resource="hosts"}')
    )
    assert 0 <= float(staleness.split()[-1]) < 60


async def test_the_openapi_document_is_served_and_describes_every_operation(facade: Facade) -> None:
    status, document = await facade.call("GET", openapi.PATH, token=None)
    assert status == 200 and document["openapi"].startswith("3.")
    operations = {
        (path, method) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    assert operations == {
        ("/api/v1/hosts", "post"),
        ("/api/v1/hosts", "get"),
        ("/api/v1/hosts/{host_id}", "get"),
        ("/api/v1/hosts/{host_id}", "put"),
        ("/api/v1/hosts/{host_id}", "delete"),
        ("/api/v1/hosts/{host_id}/gpus", "get"),
        ("/api/v1/hosts/{host_id}/heartbeat", "post"),
    }
    assert document["components"]["schemas"]["RegisterHost"] == _schema_of(document, schemas.RegisterHost)
    page_size = next(p for p in document["paths"]["/api/v1/hosts"]["get"]["parameters"] if p["name"] == "page_size")
    assert page_size["schema"]["maximum"] == 100 and page_size["schema"]["default"] == 20
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def _schema_of(document: dict[str, Any], model: Any) -> Any:
    """The model's own JSON schema (its definitions live in the document's components)."""
    generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {key: value for key, value in generated.items() if key != "$defs"}


@pytest.mark.emulator
async def test_the_caches_recover_when_the_watch_history_is_gone(facade: Facade, emulator: Emulator, k8s: K8s) -> None:
    before = (await facade.register())["host_id"]
    emulator.compact()
    emulator.drop_watches()
    name = unique_name()
    k8s.create_host(name, unique_ip())
    k8s.ok("DELETE", f"{HOSTS_PATH}/{before}")
    try:

        async def caught_up() -> bool:
            hosts = facade.app[routes.SERVICES].hosts
            return hosts.get(name) is not None and hosts.get(before) is None

        assert await eventually(caught_up, within=10)
    finally:
        k8s("DELETE", f"{HOSTS_PATH}/{name}")


async def test_serves_https_and_stops_when_asked(settings: Settings, tmp_path: pathlib.Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    config = settings.model_copy(
        update={"facade_host": "127.0.0.1", "facade_port": port, "tls_cert_file": cert, "tls_key_file": key}
    )
    server = asyncio.create_task(main.serve(config, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    context = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http, http.get(f"https://127.0.0.1:{port}/readyz", ssl=context) as response:
        assert response.status == 200
    stop.set()
    await asyncio.wait_for(server, 15)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"https://127.0.0.1:{port}/healthz", ssl=context)


async def _presented_certificate(port: int) -> bytes:
    """The certificate (DER) a new TLS connection to the facade is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()


def _der(cert: pathlib.Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


async def test_a_rotated_certificate_is_served_without_a_restart(
    settings: Settings, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_cert, old_key = self_signed(tmp_path / "old")
    new_cert, new_key = self_signed(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "tls.crt", live / "tls.key"
    cert.write_bytes(old_cert.read_bytes())
    key.write_bytes(old_key.read_bytes())
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    config = settings.model_copy(
        update={
            "facade_host": "127.0.0.1",
            "facade_port": port,
            "tls_cert_file": cert,
            "tls_key_file": key,
            "reload_interval_seconds": 0.05,
        }
    )
    server = asyncio.create_task(main.serve(config, stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        assert await _presented_certificate(port) == _der(old_cert)
        # Halfway through a rotation (the new certificate, the old key): the old pair stays in use.
        cert.write_bytes(new_cert.read_bytes())
        assert await eventually(lambda: "could not reload the TLS certificate" in caplog.text, within=5.0)
        assert await _presented_certificate(port) == _der(old_cert)
        key.write_bytes(new_key.read_bytes())

        async def rotated() -> bool:
            return await _presented_certificate(port) == _der(new_cert)

        assert await eventually(rotated, within=5.0)
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)


async def test_the_gpufleet_facade_command_serves_until_sigterm(
    facade_namespace: str, tokens_file: pathlib.Path, kube: Any
) -> None:
    import os
    import signal
    import sys

    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "GPUFLEET_AUTH_MODE": "static",
        "GPUFLEET_STATIC_TOKENS_FILE": str(tokens_file),
        "GPUFLEET_FACADE_HOST": "127.0.0.1",
        "GPUFLEET_FACADE_PORT": str(port),
        "GPUFLEET_NAMESPACE": facade_namespace,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpufleet", "facade", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            assert await eventually(ready, within=30)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_command_refuses_bad_settings(tmp_path: pathlib.Path) -> None:
    import os
    import sys

    env = {**os.environ, "GPUFLEET_AUTH_MODE": "static"}
    env.pop("GPUFLEET_STATIC_TOKENS_FILE", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpufleet", "facade", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2 and b"GPUFLEET_STATIC_TOKENS_FILE is required" in stderr
