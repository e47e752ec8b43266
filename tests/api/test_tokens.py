"""Agent tokens are long random secrets, stored owned by their Host, verified by digest."""

from __future__ import annotations

from gpufleet import tokens
from gpufleet.api import meta


def test_tokens_are_random_and_carry_256_bits() -> None:
    issued = {tokens.generate() for _ in range(100)}
    assert len(issued) == 100
    assert all(t.startswith(tokens.PREFIX) and len(t) == len(tokens.PREFIX) + 43 for t in issued)


def test_a_token_matches_only_its_own_digest() -> None:
    token, other = tokens.generate(), tokens.generate()
    assert tokens.matches(token, tokens.digest(token))
    assert not tokens.matches(other, tokens.digest(token))


def test_secret_is_labelled_owned_and_round_trips_the_token() -> None:
    token = tokens.generate()
    secret = tokens.secret_manifest(host_name="host-a", host_uid="uid-1", namespace="gpufleet", token=token)
    assert secret["metadata"]["labels"][meta.HOST_LABEL] == "host-a"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert token not in str(secret["metadata"])
    assert tokens.token_from_secret(secret) == token
    assert tokens.token_from_secret({"data": {}}) is None


def test_a_host_carries_only_a_well_formed_digest() -> None:
    token = tokens.generate()
    digest = tokens.digest(token)
    annotated = {"metadata": {"annotations": {tokens.DIGEST_ANNOTATION: digest.hex()}}, "spec": {}}
    assert tokens.digest_of_host(annotated) == digest and tokens.matches(token, digest)
    for junk in ["", "zz" * 32, digest.hex()[:-2], 42]:
        assert tokens.digest_of_host({"metadata": {"annotations": {tokens.DIGEST_ANNOTATION: junk}}}) is None


def test_only_hosts_without_a_node_or_a_digest_need_a_token() -> None:
    digest = {tokens.DIGEST_ANNOTATION: tokens.digest(tokens.generate()).hex()}
    assert tokens.needs_token({"metadata": {}, "spec": {}})
    assert not tokens.needs_token({"metadata": {"annotations": digest}, "spec": {}})
    assert not tokens.needs_token({"metadata": {}, "spec": {"nodeName": "node-1"}})
