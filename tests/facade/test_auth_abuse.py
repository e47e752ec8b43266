"""The facade's auth holds under abuse.

Failed authentications are limited per client (429 with `Retry-After`); TokenReview answers,
refusals included, are cached for a bounded time in a bounded cache; agent tokens never reach
TokenReview and never pass as an admin's or viewer's; Kubernetes tokens count only for the
configured audience; the static tokens file is read again when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib

import pytest

from gpufleet.settings import Settings
from kube_emulator import Emulator

from .conftest import API_SERVER_AUDIENCE, StartFacade, TokenReviews
from .helpers import ADMIN_TOKEN, REGISTRATION, VIEWER_TOKEN, Facade, eventually, unique_ip


async def _list(facade: Facade, token: str | None) -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with facade.http.get(f"{facade.url}/api/v1/hosts", headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


class TestFailedAuthenticationsAreLimitedPerClient:
    @pytest.fixture
    async def facade(self, start_facade: StartFacade, settings: Settings) -> Facade:
        return await start_facade(settings.model_copy(update={"auth_failure_burst": 3, "auth_failure_rate": 2.0}))

    async def test_a_client_that_keeps_failing_gets_429_with_retry_after_then_recovers(self, facade: Facade) -> None:
        host = await facade.register()
        for guess in ("wrong-1", "wrong-2", "gfa_wrong-3"):
            assert (await _list(facade, guess))[0] == 401
        status, headers, answer = await _list(facade, "wrong-4")
        assert (status, answer["code"]) == (429, 42901)
        assert str(answer["message"]).startswith("too many failed authentications; retry later")
        assert headers["Retry-After"] == "1"  # one attempt back every 0.5 s
        # Locked out, even with a right token: a lucky guess must not tell itself from a wrong one ...
        assert (await _list(facade, ADMIN_TOKEN))[0] == 429
        # ... except the hosts' own agent tokens, known by digest: heartbeats behind a shared NAT go on.
        assert (await facade.heartbeat(host["host_id"], host["agent_token"]))[0] == 200
        await asyncio.sleep(1)
        assert (await _list(facade, ADMIN_TOKEN))[0] == 200

    async def test_successes_never_use_the_bucket_up(self, facade: Facade) -> None:
        for _ in range(20):
            assert (await _list(facade, VIEWER_TOKEN))[0] == 200
        assert (await _list(facade, "wrong"))[0] == 401

    async def test_missing_tokens_are_not_attempts(self, facade: Facade) -> None:
        for _ in range(10):
            assert (await _list(facade, None))[0] == 401
        assert (await _list(facade, VIEWER_TOKEN))[0] == 200


@pytest.mark.emulator
class TestKubernetesTokens:
    @pytest.fixture
    async def facade(
        self, start_facade: StartFacade, token_reviews: TokenReviews, kubernetes_settings: Settings
    ) -> Facade:
        return await start_facade(kubernetes_settings.model_copy(update={"auth_cache_seconds": 0.5}))

    async def test_answers_are_cached_refusals_included_for_a_bounded_time(
        self, facade: Facade, token_reviews: TokenReviews
    ) -> None:
        for _ in range(5):
            assert (await _list(facade, "k8s-viewer-token"))[0] == 200
            assert (await _list(facade, "not-a-k8s-token"))[0] == 401
        assert token_reviews.tokens().count("k8s-viewer-token") == 1
        assert token_reviews.tokens().count("not-a-k8s-token") == 1
        await asyncio.sleep(0.6)
        assert (await _list(facade, "k8s-viewer-token"))[0] == 200
        assert (await _list(facade, "not-a-k8s-token"))[0] == 401
        assert token_reviews.tokens().count("k8s-viewer-token") == 2
        assert token_reviews.tokens().count("not-a-k8s-token") == 2

    async def test_the_cache_is_bounded_in_size(
        self, start_facade: StartFacade, token_reviews: TokenReviews, kubernetes_settings: Settings
    ) -> None:
        facade = await start_facade(kubernetes_settings.model_copy(update={"auth_cache_size": 2}))
        for token in ("unknown-1", "unknown-2", "unknown-3", "unknown-3", "unknown-1"):
            assert (await _list(facade, token))[0] == 401
        # unknown-1 was the least recently used when unknown-3 came: it had to be asked about again.
        assert token_reviews.tokens() == ["unknown-1", "unknown-2", "unknown-3", "unknown-1"]

    async def test_agent_tokens_never_reach_token_review(
        self, facade: Facade, token_reviews: TokenReviews, emulator: Emulator
    ) -> None:
        status, answer = await facade.call(
            "POST", "/api/v1/hosts", token="k8s-admin-token", json={**REGISTRATION, "ip_address": unique_ip()}
        )
        assert status == 201
        host = answer["data"]
        facade.registered.append(host["host_id"])
        other = (
            await facade.call(
                "POST", "/api/v1/hosts", token="k8s-admin-token", json={**REGISTRATION, "ip_address": unique_ip()}
            )
        )[1]["data"]
        facade.registered.append(other["host_id"])
        forged = "gfa_" + "x" * 43
        # A Kubernetes user whose token happens to look like an agent token is not asked about either.
        emulator.add_user("gfa_k8s-user-token", "mallory")
        emulator.allow("mallory")
        assert (await facade.heartbeat(host["host_id"], host["agent_token"]))[0] == 200
        assert (await facade.heartbeat(host["host_id"], other["agent_token"]))[0] == 403
        assert (await facade.heartbeat(host["host_id"], forged))[0] == 401
        for token in (host["agent_token"], forged, "gfa_k8s-user-token"):
            status, _, answer = await _list(facade, token)
            assert status == (403 if token == host["agent_token"] else 401), answer
        agent_shaped = [token for token in token_reviews.tokens() if token.startswith("gfa_")]
        assert agent_shaped == []
        # A user's token on a heartbeat is still recognised as a user's (403), through TokenReview.
        assert (await facade.heartbeat(host["host_id"], "k8s-admin-token"))[0] == 403

    async def test_token_review_is_asked_for_the_audience_and_its_answer_checked(
        self, facade: Facade, token_reviews: TokenReviews, emulator: Emulator
    ) -> None:
        emulator.add_user("vault-audience-token", "dave", ["fleet-admins"])
        token_reviews.audiences["vault-audience-token"] = ["vault"]
        assert (await _list(facade, "k8s-admin-token"))[0] == 200
        status, _, answer = await _list(facade, "vault-audience-token")
        assert (status, answer["code"]) == (401, 40102)
        assert {tuple(audiences) for _, audiences in token_reviews.reviewed} == {(API_SERVER_AUDIENCE,)}

    async def test_a_dedicated_audience_refuses_the_api_servers_tokens(
        self,
        start_facade: StartFacade,
        token_reviews: TokenReviews,
        kubernetes_settings: Settings,
        emulator: Emulator,
    ) -> None:
        facade = await start_facade(kubernetes_settings.model_copy(update={"auth_audience": "gpufleet-facade"}))
        emulator.add_user("facade-audience-token", "erin", ["fleet-admins"])
        token_reviews.audiences["facade-audience-token"] = ["gpufleet-facade", API_SERVER_AUDIENCE]
        assert (await _list(facade, "facade-audience-token"))[0] == 200
        assert (await _list(facade, "k8s-admin-token"))[0] == 401


@pytest.mark.emulator
@pytest.mark.parametrize(("audience", "expected"), [(API_SERVER_AUDIENCE, 200), ("gpufleet-facade", 401)])
async def test_an_answer_without_audiences_counts_only_for_the_api_servers_own(
    start_facade: StartFacade, kubernetes_settings: Settings, emulator: Emulator, audience: str, expected: int
) -> None:
    """The TokenReview API: an empty `status.audiences` means the API server's audience."""
    emulator.add_user("plain-review-token", "frank")
    emulator.allow("frank")
    facade = await start_facade(kubernetes_settings.model_copy(update={"auth_audience": audience}))
    assert (await _list(facade, "plain-review-token"))[0] == expected


def _swap_in(path: pathlib.Path, text: str | None) -> None:
    """Replace the file as the kubelet does (the new file, then a rename over the old), or remove it."""
    if text is None:
        path.unlink()
        return
    replacement = path.with_suffix(".new")
    replacement.write_text(text)
    replacement.replace(path)


class TestStaticTokensFileReload:
    @pytest.fixture
    def tokens_path(self, tmp_path: pathlib.Path) -> pathlib.Path:
        path = tmp_path / "tokens"
        path.write_text(f"{ADMIN_TOKEN},admin\nold-viewer-token,viewer\n")
        return path

    @pytest.fixture
    async def facade(self, start_facade: StartFacade, settings: Settings, tokens_path: pathlib.Path) -> Facade:
        return await start_facade(
            settings.model_copy(update={"static_tokens_file": tokens_path, "reload_interval_seconds": 0.05})
        )

    async def test_a_changed_file_is_read_again_without_a_restart(
        self, facade: Facade, tokens_path: pathlib.Path
    ) -> None:
        assert (await _list(facade, "old-viewer-token"))[0] == 200
        _swap_in(tokens_path, f"{ADMIN_TOKEN},admin\nnew-viewer-token,viewer\n")

        async def swapped() -> bool:
            return (await _list(facade, "new-viewer-token"))[0] == 200

        assert await eventually(swapped, within=5.0)
        assert (await _list(facade, "old-viewer-token"))[0] == 401

    async def test_a_broken_file_keeps_the_tokens_that_were_loaded(
        self, facade: Facade, tokens_path: pathlib.Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)
        _swap_in(tokens_path, "secret-token-value,superuser\n")

        async def complained() -> bool:
            return "could not reload the static tokens file" in caplog.text

        assert await eventually(complained, within=5.0)
        assert "secret-token-value" not in caplog.text
        assert (await _list(facade, "old-viewer-token"))[0] == 200
        _swap_in(tokens_path, None)
        await asyncio.sleep(0.2)
        assert (await _list(facade, "old-viewer-token"))[0] == 200
