"""Who may call what: bearer tokens, three roles, two ways to check admins and viewers.

- Agents heartbeat with their host's token. The facade knows only SHA-256 digests of those tokens
  (an annotation on each Host, see `gpufleet.tokens`) and compares them in constant time; a token of
  another host is recognised (403) rather than merely unknown (401). Agent tokens start with
  `gfa_` (`tokens.PREFIX`, on every token ever issued): a token that does is never sent to
  TokenReview, on any path, and is never an admin's or viewer's.
- Admins and viewers are checked either against a static `token,role` file (mounted from a
  Secret, read again when it changes) or, in Kubernetes mode, by the API server itself:
  TokenReview says who the token is (for the configured audience only), SubjectAccessReview says
  whether RBAC lets them do this verb on `hosts.gpufleet.io`, so one RoleBinding governs kubectl
  and REST alike. Review answers, refusals included, are cached briefly by token digest, in caches
  bounded in size.
- Authentication attempts the facade cannot settle from what it knows are limited per client
  (ratelimit.py): a client that keeps failing is answered 429.

Tokens are never logged and never kept in the clear beyond the request that carries them; the
caller's identity (never the token) is kept on the request for the audit line.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hmac
import logging
import pathlib
import re
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from gpufleet import informer, settings, tokens
from gpufleet.api import meta
from gpufleet.facade import errors, kubeapi, ratelimit

logger = logging.getLogger(__name__)

#: How long a TokenReview/SubjectAccessReview answer is reused for the same token and verb (default).
REVIEW_TTL_SECONDS = 10.0
#: Most answers kept per cache (default).
REVIEW_CACHE_SIZE = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a token belongs to, as the audit line names them (never the token itself)."""

    kind: str
    """`kubernetes`, `static` or `agent`."""
    name: str
    """The Kubernetes username, `static:<role>:line-<n>` (its line in the tokens file), or `agent:<host>`."""
    groups: tuple[str, ...] = ()
    role: Role | None = None
    """The role of static and agent tokens; Kubernetes callers' rights are RBAC's to say."""
    user: dict[str, Any] | None = dataclasses.field(default=None, compare=False)
    """Kubernetes: the TokenReview's user (username, uid, groups, extra), for SubjectAccessReviews."""
    key: bytes = dataclasses.field(default=b"", compare=False)
    """The token's digest, to cache decisions by."""


#: The identity of the caller, once authenticated (for the audit line).
CALLER = web.RequestKey("caller", Identity)


def looks_like_agent_token(token: str) -> bool:
    """Whether a token has the agent tokens' prefix: such a token is never a Kubernetes token."""
    return token.startswith(tokens.PREFIX)


#: What no token holds: control characters, and the surrogates that stand for bytes that are not UTF-8.
_NOT_A_TOKEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def bearer_token(request: web.Request) -> str:
    """The request's bearer token, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.FacadeError(errors.UNAUTHENTICATED)
    if _NOT_A_TOKEN.search(token):  # control characters, or bytes that were not UTF-8: nobody's token
        raise errors.FacadeError(errors.INVALID_TOKEN)
    return token


# ----- agent tokens ---------------------------------------------------------------------------------


def _token_digest(host_object: informer.Obj) -> list[str]:
    digest = tokens.digest_of_host(host_object)
    return [digest.hex()] if digest is not None else []


#: The Host store's index of agent-token digests (see `routes.host_indexers`).
TOKEN_INDEX = ("token", _token_digest)


class AgentTokens:
    """Checks a heartbeat's token against the digest its Host carries, in constant time.

    The digests come with the Hosts the facade watches anyway (`tokens.DIGEST_ANNOTATION`), so
    the facade's identity needs no access to any Secret.
    """

    def __init__(self, hosts: informer.Store) -> None:
        self._hosts = hosts

    def owner_of(self, token: str, host_name: str) -> bool | None:
        """True: the token is this host's; False: another host's; None: no host's."""
        digest = tokens.digest(token)
        current = self._hosts.get(host_name)
        expected = tokens.digest_of_host(current) if current is not None else None
        if expected is not None and hmac.compare_digest(digest, expected):
            return True
        return False if self._hosts.by(TOKEN_INDEX[0], digest.hex()) else None

    def known(self, token: str) -> bool:
        """Whether the token is some host's agent token."""
        return bool(self._hosts.by(TOKEN_INDEX[0], tokens.digest(token).hex()))

    def host_of(self, token: str) -> str | None:
        """The host whose agent token this is, if any."""
        for found in self._hosts.by(TOKEN_INDEX[0], tokens.digest(token).hex()):
            return str(found["metadata"]["name"])
        return None


# ----- admins and viewers -----------------------------------------------------------------------------


class Authorizer(Protocol):
    """How admins and viewers are told apart from strangers, and what each may do."""

    def cached(self, digest: bytes) -> tuple[bool, Identity | None]:
        """(True, who) when this token's answer is known without asking anyone (who: None for nobody)."""

    async def identify(self, token: str, digest: bytes) -> Identity | None:
        """Who the token is, or None when it is nobody's."""

    async def allowed(self, identity: Identity, access: Access) -> bool:
        """Whether this caller may do this."""


class TtlCache(Generic[K, V]):
    """At most `size` entries, each for `ttl` seconds; the least recently used go first."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl = size, ttl
        self._clock = clock
        self._entries: collections.OrderedDict[K, tuple[float, V]] = collections.OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclasses.dataclass(frozen=True)
class StaticTokens:
    """Admin and viewer tokens from a `token,role` file, kept as digests with their line numbers."""

    roles: tuple[tuple[bytes, Role, int], ...]

    @classmethod
    def load(cls, path: pathlib.Path) -> StaticTokens:
        """Read the file; a malformed line fails, naming its line number (not its content)."""
        entries: list[tuple[bytes, Role, int]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            token, _, role = (part.strip() for part in line.rpartition(","))
            if not token or role not in (Role.ADMIN, Role.VIEWER):
                raise ValueError(f"{path}:{number}: expected `token,role` with role admin or viewer")
            if looks_like_agent_token(token):
                raise ValueError(f"{path}:{number}: tokens starting with {tokens.PREFIX} are agent tokens")
            entries.append((tokens.digest(token), Role(role), number))
        return cls(tuple(entries))

    def entry_of(self, token: str) -> tuple[Role, int] | None:
        digest = tokens.digest(token)
        found: tuple[Role, int] | None = None
        for expected, role, number in self.roles:  # every entry, so timing does not tell which one matched
            if hmac.compare_digest(digest, expected) and found is None:
                found = (role, number)
        return found

    def role_of(self, token: str) -> Role | None:
        entry = self.entry_of(token)
        return entry[0] if entry else None

    def cached(self, digest: bytes) -> tuple[bool, Identity | None]:
        return False, None  # answered locally, but each answer counts as an attempt

    async def identify(self, token: str, digest: bytes) -> Identity | None:
        entry = self.entry_of(token)
        if entry is None:
            return None
        role, number = entry
        return Identity("static", f"static:{role.value}:line-{number}", role=role, key=digest)

    async def allowed(self, identity: Identity, access: Access) -> bool:
        return identity.role is Role.ADMIN or not access.admin_only


class StaticTokensFile:
    """The static tokens of a file, read again by `reload` (a malformed new version is ignored)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.tokens = StaticTokens.load(path)

    def reload(self) -> None:
        self.tokens = StaticTokens.load(self.path)

    def role_of(self, token: str) -> Role | None:
        return self.tokens.role_of(token)

    def cached(self, digest: bytes) -> tuple[bool, Identity | None]:
        return self.tokens.cached(digest)

    async def identify(self, token: str, digest: bytes) -> Identity | None:
        return await self.tokens.identify(token, digest)

    async def allowed(self, identity: Identity, access: Access) -> bool:
        return await self.tokens.allowed(identity, access)


class KubernetesReviews:
    """TokenReview (for one audience) + SubjectAccessReview on `hosts.gpufleet.io`, answers cached by digest.

    Both caches are bounded in size (least recently used out first) and time; a token that is
    nobody's is cached as such, so repeating it costs no TokenReview within the TTL either.
    """

    def __init__(
        self,
        api: kubeapi.Kubernetes,
        *,
        audience: str,
        ttl: float = REVIEW_TTL_SECONDS,
        size: int = REVIEW_CACHE_SIZE,
    ) -> None:
        self._api = api
        self.audience = audience
        self.users: TtlCache[bytes, Identity | None] = TtlCache(size, ttl)
        self.decisions: TtlCache[tuple[bytes, Access], bool] = TtlCache(size, ttl)

    def cached(self, digest: bytes) -> tuple[bool, Identity | None]:
        return self.users.get(digest)

    async def identify(self, token: str, digest: bytes) -> Identity | None:
        user = await self._api.token_review(
            token, audience=self.audience, implicit=self.audience == settings.API_SERVER_AUDIENCE
        )
        identity = None
        if user is not None:
            identity = Identity("kubernetes", str(user["user"]), tuple(user["groups"]), user=user, key=digest)
        self.users.put(digest, identity)
        return identity

    async def allowed(self, identity: Identity, access: Access) -> bool:
        hit, decision = self.decisions.get((identity.key, access))
        if hit and decision is not None:
            return decision
        assert identity.user is not None
        allowed = await self._api.access_review(identity.user, verb=access.value, group=meta.GROUP, resource="hosts")
        self.decisions.put((identity.key, access), allowed)
        return allowed


# ----- the checks routes call -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Guard:
    """The facade's access rules, one call per operation kind."""

    callers: Authorizer
    agents: AgentTokens
    limiter: ratelimit.FailureLimiter

    async def require(self, request: web.Request, access: Access) -> Identity:
        """Admin/viewer operations: 401 for no or unknown token, 403 for a caller without the right."""
        token = bearer_token(request)
        if looks_like_agent_token(token):  # never sent to TokenReview, never an admin's or viewer's
            host = self.agents.host_of(token)
            if host is not None:
                _remember(request, Identity("agent", f"agent:{host}", role=Role.AGENT))
                raise errors.FacadeError(errors.FORBIDDEN, "agent tokens may only send heartbeats")
            self._attempt(request)
            raise errors.FacadeError(errors.INVALID_TOKEN)
        identity = await self._identify(request, token)
        if identity is None:
            raise errors.FacadeError(errors.INVALID_TOKEN)
        _remember(request, identity)
        if not await self.callers.allowed(identity, access):
            raise errors.FacadeError(errors.FORBIDDEN, f"the token's role may not {access.value} hosts")
        return identity

    async def require_agent(self, request: web.Request, host_name: str) -> Identity:
        """Heartbeats: only the host's own agent token; another host's token or a user's is 403."""
        token = bearer_token(request)
        owner = self.agents.owner_of(token, host_name)
        if owner:
            identity = Identity("agent", f"agent:{host_name}", role=Role.AGENT)
            _remember(request, identity)
            return identity
        if owner is False:
            _remember(request, Identity("agent", f"agent:{self.agents.host_of(token)}", role=Role.AGENT))
            raise errors.FacadeError(errors.OTHER_HOST)
        if looks_like_agent_token(token):  # revoked, or never issued: not TokenReview's to judge
            self._attempt(request)
            raise errors.FacadeError(errors.INVALID_TOKEN)
        caller = await self._identify(request, token)
        if caller is not None:
            _remember(request, caller)
            raise errors.FacadeError(errors.FORBIDDEN, "heartbeats need the host's agent token")
        raise errors.FacadeError(errors.INVALID_TOKEN)

    async def _identify(self, request: web.Request, token: str) -> Identity | None:
        """Who an admin/viewer token is; an attempt against the client's limit unless already known."""
        digest = tokens.digest(token)
        known, identity = self.callers.cached(digest)
        if known and identity is not None:
            return identity
        client = self._attempt(request)
        if not known:
            try:
                identity = await self.callers.identify(token, digest)
            except BaseException:  # the API failed (503), not the caller: no failed attempt
                self.limiter.give_back(client)
                raise
        if identity is not None:
            self.limiter.give_back(client)
        return identity

    def _attempt(self, request: web.Request) -> str:
        """Take one authentication attempt from the client's bucket, or answer 429."""
        client = ratelimit.client_key(request.remote)
        wait = self.limiter.take(client)
        if wait is not None:
            seconds = ratelimit.retry_after(wait)
            raise errors.FacadeError(
                errors.TOO_MANY_FAILURES, f"retry in {seconds} s", headers={"Retry-After": str(seconds)}
            )
        return client


def _remember(request: web.Request, identity: Identity) -> None:
    request[CALLER] = identity
    kubeapi.ACTING_FOR.set(identity.name)
