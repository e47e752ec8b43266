"""Who may call what: bearer tokens, three roles, two ways to check admins and viewers.

- Agents heartbeat with their host's token. The facade knows only SHA-256 digests of those tokens
  (fed by a watch on the agent-token Secrets) and compares them in constant time; a token of
  another host is recognised (403) rather than merely unknown (401).
- Admins and viewers are checked either against a static `token,role` file (mounted from a
  Secret) or, in Kubernetes mode, by the API server itself: TokenReview says who the token is,
  SubjectAccessReview says whether RBAC lets them do this verb on `hosts.gpufleet.io`, so one
  RoleBinding governs kubectl and REST alike. Review answers are cached briefly by token digest.

Tokens are never logged and never kept in the clear beyond the request that carries them.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import pathlib
import time
from typing import Any, Protocol

from aiohttp import web

from gpufleet import informer, tokens
from gpufleet.api import meta
from gpufleet.facade import errors, kubeapi

#: How long a TokenReview/SubjectAccessReview answer is reused for the same token and verb.
REVIEW_TTL_SECONDS = 10.0


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"
    AGENT = "agent"


class Access(enum.Enum):
    """What an operation needs, with the Kubernetes verb that stands for it in RBAC."""

    READ_LIST = "list"
    READ_GET = "get"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"

    @property
    def admin_only(self) -> bool:
        return self not in (Access.READ_LIST, Access.READ_GET)


def bearer_token(request: web.Request) -> str:
    """The request's bearer token, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.FacadeError(errors.UNAUTHENTICATED)
    return token


# ----- agent tokens ---------------------------------------------------------------------------------


def _digest_of_secret(secret: informer.Obj) -> informer.Obj:
    """What the Secret cache keeps of an agent-token Secret: its host and the token's digest, no token."""
    metadata = secret.get("metadata") or {}
    token = tokens.token_from_secret(secret) if secret.get("type") == tokens.SECRET_TYPE else None
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": metadata.get("labels") or {},
        },
        "digest": tokens.digest(token).hex() if token else None,
    }


def _secret_host(secret: informer.Obj) -> list[str]:
    host = secret["metadata"]["labels"].get(meta.HOST_LABEL)
    return [host] if host and secret["digest"] else []


def _secret_digest(secret: informer.Obj) -> list[str]:
    return [secret["digest"]] if secret["digest"] else []


def agent_token_store() -> informer.Store:
    """A store of agent-token Secrets reduced to digests, indexed by host and by digest."""
    return informer.Store(transform=_digest_of_secret, indexers={"host": _secret_host, "digest": _secret_digest})


class AgentTokens:
    """Checks a heartbeat's token against the host's digest, in constant time."""

    def __init__(self, store: informer.Store) -> None:
        self._store = store

    def remember(self, secret: informer.Obj) -> None:
        """Take in a Secret the facade just created, before the watch brings it."""
        self._store.apply(secret)

    def owner_of(self, token: str, host_name: str) -> bool | None:
        """True: the token is this host's; False: another host's; None: no host's."""
        digest = tokens.digest(token)
        for secret in self._store.by("host", host_name):
            if hmac.compare_digest(digest, bytes.fromhex(secret["digest"])):
                return True
        return False if self._store.by("digest", digest.hex()) else None

    def known(self, token: str) -> bool:
        """Whether the token is some host's agent token."""
        return bool(self._store.by("digest", tokens.digest(token).hex()))


# ----- admins and viewers -----------------------------------------------------------------------------


class Authorizer(Protocol):
    async def allowed(self, token: str, access: Access) -> bool | None:
        """True: may; False: a known caller who may not; None: the token is nobody's."""


@dataclasses.dataclass(frozen=True)
class StaticTokens:
    """Admin and viewer tokens from a `token,role` file, kept as digests."""

    roles: tuple[tuple[bytes, Role], ...]

    @classmethod
    def load(cls, path: pathlib.Path) -> StaticTokens:
        """Read the file; a malformed line fails start-up, naming its line number (not its content)."""
        entries: list[tuple[bytes, Role]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            token, _, role = (part.strip() for part in line.rpartition(","))
            if not token or role not in (Role.ADMIN, Role.VIEWER):
                raise ValueError(f"{path}:{number}: expected `token,role` with role admin or viewer")
            entries.append((tokens.digest(token), Role(role)))
        return cls(tuple(entries))

    def role_of(self, token: str) -> Role | None:
        digest = tokens.digest(token)
        found: Role | None = None
        for expected, role in self.roles:  # every entry, so timing does not tell which one matched
            if hmac.compare_digest(digest, expected) and found is None:
                found = role
        return found

    async def allowed(self, token: str, access: Access) -> bool | None:
        role = self.role_of(token)
        if role is None:
            return None
        return role is Role.ADMIN or not access.admin_only


class KubernetesReviews:
    """TokenReview + SubjectAccessReview on `hosts.gpufleet.io`, answers cached by token digest."""

    def __init__(self, api: kubeapi.Kubernetes, *, ttl: float = REVIEW_TTL_SECONDS) -> None:
        self._api = api
        self._ttl = ttl
        self._users: dict[bytes, tuple[float, dict[str, Any] | None]] = {}
        self._decisions: dict[tuple[bytes, Access], tuple[float, bool]] = {}

    async def allowed(self, token: str, access: Access) -> bool | None:
        digest = tokens.digest(token)
        now = time.monotonic()
        cached = self._decisions.get((digest, access))
        if cached is not None and cached[0] > now:
            return cached[1]
        user = await self._user(digest, token, now)
        if user is None:
            return None
        decision = await self._api.access_review(user, verb=access.value, group=meta.GROUP, resource="hosts")
        self._decisions[(digest, access)] = (now + self._ttl, decision)
        self._expire(now)
        return decision

    async def _user(self, digest: bytes, token: str, now: float) -> dict[str, Any] | None:
        cached = self._users.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = await self._api.token_review(token)
        self._users[digest] = (now + self._ttl, user)
        return user

    def _expire(self, now: float) -> None:
        if len(self._decisions) > 10_000:
            self._decisions = {key: value for key, value in self._decisions.items() if value[0] > now}
            self._users = {key: value for key, value in self._users.items() if value[0] > now}


# ----- the checks routes call -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Guard:
    """The facade's access rules, one call per operation kind."""

    callers: Authorizer
    agents: AgentTokens

    async def require(self, request: web.Request, access: Access) -> None:
        """Admin/viewer operations: 401 for no or unknown token, 403 for a caller without the right."""
        token = bearer_token(request)
        allowed = await self.callers.allowed(token, access)
        if allowed is None:
            if self.agents.known(token):
                raise errors.FacadeError(errors.FORBIDDEN, "agent tokens may only send heartbeats")
            raise errors.FacadeError(errors.INVALID_TOKEN)
        if not allowed:
            raise errors.FacadeError(errors.FORBIDDEN, f"the token's role may not {access.value} hosts")

    async def require_agent(self, request: web.Request, host_name: str) -> None:
        """Heartbeats: only the host's own agent token; another host's token or a user's is 403."""
        token = bearer_token(request)
        owner = self.agents.owner_of(token, host_name)
        if owner:
            return
        if owner is False:
            raise errors.FacadeError(errors.OTHER_HOST)
        if await self.callers.allowed(token, Access.READ_GET) is not None:
            raise errors.FacadeError(errors.FORBIDDEN, "heartbeats need the host's agent token")
        raise errors.FacadeError(errors.INVALID_TOKEN)
