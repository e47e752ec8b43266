"""Pure logic of the facade: the cache never goes backwards, ids and labels follow their rules."""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any

import pydantic
import pytest

from gpufleet import informer
from gpufleet.api import formats
from gpufleet.facade import claims, heartbeats, routes, schemas, translate


def _obj(name: str, version: int, deleting: bool = False, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": str(version)}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": metadata, "spec": spec}


class TestStore:
    def test_an_older_version_never_replaces_a_newer_one(self) -> None:
        store = informer.Store()
        store.apply(_obj("a", 5, colour="new"))
        store.apply(_obj("a", 4, colour="old"))
        assert store.get("a") == _obj("a", 5, colour="new")

    def test_a_deleted_object_is_not_resurrected_by_stale_news(self) -> None:
        store = informer.Store()
        store.apply(_obj("a", 5))
        store.remove(_obj("a", 6))
        store.apply(_obj("a", 5))
        assert store.get("a") is None
        store.apply(_obj("a", 9))  # created again later
        assert store.get("a") is not None

    def test_an_object_being_deleted_is_gone_for_readers(self) -> None:
        store = informer.Store()
        store.apply(_obj("a", 5))
        store.apply(_obj("a", 6, deleting=True))
        assert store.get("a") is None and len(store) == 0

    def test_indexes_follow_updates_and_removals(self) -> None:
        store = informer.Store(indexers={"colour": lambda obj: [obj["spec"]["colour"]]})
        store.apply(_obj("a", 1, colour="red"))
        store.apply(_obj("b", 2, colour="red"))
        store.apply(_obj("a", 3, colour="blue"))
        assert [o["metadata"]["name"] for o in store.by("colour", "red")] == ["b"]
        store.remove(_obj("b", 4))
        assert store.by("colour", "red") == [] and len(store.by("colour", "blue")) == 1

    def test_a_relist_drops_what_is_no_longer_there(self) -> None:
        store = informer.Store()
        store.apply(_obj("a", 1))
        store.apply(_obj("b", 2))
        store.replace([_obj("b", 3), _obj("c", 4)])
        assert store.get("a") is None and store.get("b") == _obj("b", 3) and store.get("c") is not None

    def test_membership_changes_only_when_names_come_or_go(self) -> None:
        store = informer.Store()
        store.apply(_obj("a", 1))
        membership = store.membership
        store.apply(_obj("a", 2))
        assert store.membership == membership
        store.remove(_obj("a", 3))
        assert store.membership > membership


class TestTranslate:
    def test_gpu_id_is_the_first_52_bits_of_the_uid_digest(self) -> None:
        uid = "5562e2ff-ddad-4725-af58-5991cb32e959"
        expected = int(hashlib.sha256(uid.encode()).hexdigest()[:13], 16)
        assert translate.gpu_id(uid) == expected < 2**52

    def test_timestamps_read_as_utc_seconds_with_z(self) -> None:
        assert translate.rfc3339("2026-01-26T12:00:00.123456+02:00") == "2026-01-26T10:00:00Z"
        assert translate.rfc3339(None) is None

    def test_integral_usage_reads_as_an_integer(self) -> None:
        summary = translate.host_summary({"metadata": {"name": "h"}, "spec": {}, "status": {"usedCpu": 8.0}})
        assert summary["used_cpu"] == 8 and isinstance(summary["used_cpu"], int)

    def test_system_labels_are_hidden_and_kept_on_update(self) -> None:
        labels = {"gpufleet.io/status": "online", "zone": "a", "old": "x"}
        patch = translate.update_patch(
            {"metadata": {"name": "h", "labels": labels}}, schemas.UpdateHost(labels={"zone": "b"})
        )
        assert patch == {"metadata": {"labels": {"old": None, "zone": "b"}}}
        assert translate.user_labels(labels) == {"zone": "a", "old": "x"}


class TestLastHeartbeat:
    """The REST `last_heartbeat`: the later of the Lease's renewal and the Host's `status.lastHeartbeat`."""

    @staticmethod
    def host(last: str | None) -> dict[str, Any]:
        return {"metadata": {"name": "h"}, "status": {"lastHeartbeat": last} if last else {}}

    @pytest.mark.parametrize(
        ("last", "renewed", "shown"),
        [
            ("2026-01-26T10:00:00Z", "2026-01-26T10:00:09.999999Z", "2026-01-26T10:00:09Z"),
            ("2026-01-26T10:00:10Z", "2026-01-26T10:00:09.999999Z", "2026-01-26T10:00:10Z"),
            ("2026-01-26T12:00:10+02:00", "2026-01-26T10:00:09.000001Z", "2026-01-26T10:00:10Z"),
            (None, "2026-01-26T10:00:09.5Z", "2026-01-26T10:00:09Z"),
            ("2026-01-26T10:00:00Z", None, "2026-01-26T10:00:00Z"),
            (None, None, None),
            ("not a time", "2026-01-26T10:00:09.5Z", "2026-01-26T10:00:09Z"),
            ("2026-01-26T10:00:00Z", "not a time", "2026-01-26T10:00:00Z"),
            (None, "not a time", "not a time"),
        ],
    )
    def test_the_later_one_in_seconds_with_z(self, last: str | None, renewed: str | None, shown: str | None) -> None:
        assert translate.last_heartbeat(self.host(last), renewed) == shown
        assert translate.host_summary(self.host(last), renewed)["last_heartbeat"] == shown

    def test_a_lease_is_kept_compact(self) -> None:
        lease = {
            "metadata": {
                "name": "h",
                "namespace": "leases",
                "resourceVersion": "7",
                "uid": "u",
                "managedFields": [{"manager": "x"}],
                "ownerReferences": [{"kind": "Host"}],
            },
            "spec": {"holderIdentity": "gpufleet-facade", "renewTime": "2026-01-26T10:00:09.5Z"},
        }
        assert heartbeats.compact_lease(lease) == {
            "metadata": {"name": "h", "namespace": "leases", "resourceVersion": "7"},
            "spec": {"renewTime": "2026-01-26T10:00:09.5Z"},
        }

    def test_the_answer_to_a_heartbeat_is_the_envelope_byte_for_byte(self) -> None:
        expected = routes.envelope(message=routes.HEARTBEAT_RECEIVED)
        answer = routes._heartbeat_received()
        assert (answer.status, answer.body, answer.content_type, answer.charset) == (
            expected.status,
            expected.body,
            expected.content_type,
            expected.charset,
        )


Obj = dict[str, Any]


class TestStatusWrites:
    """When a heartbeat must write the Host's status (heartbeats.status_reason)."""

    NOW = datetime.datetime(2026, 1, 26, 10, 0, 0, tzinfo=datetime.UTC)
    HEARTBEAT = schemas.Heartbeat.model_validate_json(
        '{"status": "online", "health_status": "healthy", "used_cpu": 8, "used_memory": 1000, "used_gpu": 2}'
    )

    def host(self, *, total_cpu: Any = 32, total_memory: Any = 10_000, age: float = 10, **status: Any) -> Obj:
        written = formats.rfc3339(self.NOW - datetime.timedelta(seconds=age))
        reported = {
            "lastHeartbeat": written,
            "reportedState": "online",
            "healthStatus": "healthy",
            "usedCpu": 8,
            "usedMemory": 1000,
            "reportedUsedGpu": 2,
            "state": "online",
            **status,
        }
        spec = {"totalCpu": total_cpu, "totalMemory": total_memory}
        return {"metadata": {"name": "h"}, "spec": spec, "status": reported}

    def reason(self, host: Obj) -> str | None:
        return heartbeats.status_reason(host, self.HEARTBEAT, self.NOW, 300)

    def test_the_same_report_writes_nothing(self) -> None:
        assert self.reason(self.host()) is None
        assert self.reason(self.host(usedCpu=8.0)) is None  # 8 and 8.0 are one amount

    def test_a_host_without_status_or_heartbeat_is_written(self) -> None:
        assert self.reason({"metadata": {"name": "h"}, "spec": {}}) == "first"
        assert self.reason(self.host(lastHeartbeat=None)) == "first"
        assert self.reason(self.host(lastHeartbeat="garbage")) == "first"

    @pytest.mark.parametrize(
        ("stored", "reason"),
        [
            ({"reportedState": "offline"}, "state"),
            ({"healthStatus": "unknown"}, "health"),
            ({"reportedUsedGpu": 3}, "gpu"),
            ({"usedCpu": 8 + 3.3}, "cpu"),  # more than 10% of 32
            ({"usedCpu": 8 - 3.3}, "cpu"),
            ({"usedMemory": 1000 + 1001}, "memory"),  # more than 10% of 10,000
            ({"usedCpu": None}, "cpu"),
            ({"usedCpu": True}, "cpu"),  # not an amount
        ],
    )
    def test_a_change_is_written(self, stored: dict[str, Any], reason: str) -> None:
        assert self.reason(self.host(**stored)) == reason

    def test_usage_within_a_tenth_of_the_total_is_not(self) -> None:
        assert self.reason(self.host(usedCpu=8 + 3.2, usedMemory=1000 - 1000)) is None

    def test_usage_of_a_host_of_unknown_size_is_written_on_any_change(self) -> None:
        assert self.reason(self.host(total_cpu=0, usedCpu=8.01)) == "cpu"
        assert self.reason(self.host(total_memory=None, usedMemory=1001)) == "memory"
        assert self.reason(self.host(total_cpu=0, total_memory=None)) is None

    def test_a_status_is_written_again_once_it_is_as_old_as_the_resync_interval(self) -> None:
        assert self.reason(self.host(age=299)) is None
        assert self.reason(self.host(age=300)) == "resync"


class TestLabelRules:
    @pytest.mark.parametrize("key", ["zone", "example.com/zone", "a", "A-b_c.d", "x" * 63, f"{'a' * 253}/b"])
    def test_valid_keys(self, key: str) -> None:
        schemas.UpdateHost(labels={key: "v"})

    @pytest.mark.parametrize(
        "key", ["", "-a", "a-", "x" * 64, "Example.com/a", f"{'a' * 254}/b", "a/b/c", "gpufleet.io/status", "a b"]
    )
    def test_invalid_keys(self, key: str) -> None:
        with pytest.raises(pydantic.ValidationError):
            schemas.UpdateHost(labels={key: "v"})

    @pytest.mark.parametrize(
        ("value", "valid"),
        [("", True), ("a.b-c_d", True), ("x" * 63, True), ("x" * 64, False), ("-a", False), ("a b", False)],
    )
    def test_values(self, value: str, valid: bool) -> None:
        if valid:
            schemas.UpdateHost(labels={"k": value})
        else:
            with pytest.raises(pydantic.ValidationError):
                schemas.UpdateHost(labels={"k": value})


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOW = datetime.datetime(2026, 1, 26, 10, 0, 30, tzinfo=datetime.UTC)


def _claim(*, owner_uid: str | None = None, created: str = "2026-01-26T10:00:00Z") -> dict[str, Any]:
    claim = claims.manifest("10.0.0.7", "host-a", "ns")
    claim["metadata"].update(uid="c1", resourceVersion="5", creationTimestamp=created)
    if owner_uid is not None:
        claim["metadata"]["ownerReferences"] = [
            {"apiVersion": "gpufleet.io/v1alpha1", "kind": "Host", "name": "host-a", "uid": owner_uid}
        ]
    return claim


def _host(uid: str = "h1", ip: str = "10.0.0.7", deleting: bool = False) -> dict[str, Any]:
    obj = _obj("host-a", 3, ipAddress=ip)
    obj["metadata"]["uid"] = uid
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-26T10:00:20Z"
    return obj


class TestClaims:
    TRICKY = ["10.0.0.1", "10.0.1.0", "::1", "::", "1::", "::ffff:1.2.3.4", "::ffff:1:2:3:4", "fe80::1%eth0", "fe80::1"]

    def test_names_are_valid_object_names_one_per_address(self) -> None:
        names = [claims.name(formats.same_ip_key(ip)) for ip in self.TRICKY]
        assert all(_SUBDOMAIN.match(name) and len(name) <= 253 for name in names), names
        assert len(set(names)) == len(names)

    def test_one_address_spelled_differently_has_one_name(self) -> None:
        spellings = ["2001:db8::b2", "2001:0DB8:0000::00B2", "2001:db8:0:0:0:0:0:b2"]
        assert len({claims.name(formats.same_ip_key(ip)) for ip in spellings}) == 1
        assert claims.name("10.0.0.7") == "gpufleet-ip-10-0-0-7"

    def test_a_bound_claim_stands_exactly_while_its_host_lives_with_its_ip(self) -> None:
        bound = _claim(owner_uid="h1")
        assert claims.holds(bound, "10.0.0.7", _host(), _NOW, 30).holds
        assert not claims.holds(bound, "10.0.0.7", None, _NOW, 30).holds
        assert not claims.holds(bound, "10.0.0.7", _host(deleting=True), _NOW, 30).holds
        assert not claims.holds(bound, "10.0.0.7", _host(uid="h2"), _NOW, 30).holds  # re-created under its name
        assert not claims.holds(bound, "10.0.0.7", _host(ip="10.0.0.8"), _NOW, 30).holds

    def test_an_unbound_claim_stands_while_its_host_exists_or_for_the_grace(self) -> None:
        unbound = _claim()
        assert claims.holds(unbound, "10.0.0.7", None, _NOW, 31).holds  # 30 s old: in flight
        assert not claims.holds(unbound, "10.0.0.7", None, _NOW, 30).holds
        assert claims.holds(unbound, "10.0.0.7", _host(), _NOW, 30).holds  # created, not bound yet
        assert not claims.holds(unbound, "10.0.0.7", _host(deleting=True), _NOW, 30).holds
        assert claims.holds(_claim(created="garbled"), "10.0.0.7", None, _NOW, 30).holds


def test_the_openapi_document_is_the_route_table() -> None:
    """Every documented operation is served by its handler, and nothing else of the API is."""
    from aiohttp import web

    from gpufleet.facade import openapi, routes
    from gpufleet.settings import Settings

    document = openapi.document(Settings())
    app = web.Application()
    routes.add_routes(app, document)
    served = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    assert served == documented and len(served) == 7
    operation_ids = {
        op["operationId"] for item in document["paths"].values() for m, op in item.items() if m != "parameters"
    }
    assert operation_ids == set(routes.HANDLERS)
