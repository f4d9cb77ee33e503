"""TempAuth: users from the deployment file, token issue and validation, authorization.

Sans-IO: every method takes plain values (headers as a mapping, the path already split) and
returns plain records. The proxy owns the sockets and the storage look-ups; docs/auth.md
gives the exact call sequence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from common.authtoken import DeploymentTokens, TokenClaims, derive_secret
from common.clock import Clock
from common.deploy import DeploymentConfig, TempAuthConfig, TempAuthUser
from proxy.auth._acl import AccountAcl
from proxy.auth._authorize import RESELLER_ADMIN, Policy, authorize
from proxy.auth._model import (
    AuthResponse,
    Decision,
    Identity,
    InvalidToken,
    PathParts,
    lower_headers,
    unauthorized,
)

__all__ = ["S3Credentials", "TempAuth", "is_auth_path"]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*_$")
# Names end up in URLs, group lists and tokens; refuse what would make those ambiguous.
_NAME_BYTES_MAX = 256
_CREDENTIAL_BYTES_MAX = 1024
_ADMIN = ".admin"


@dataclass(frozen=True)
class _User:
    account: str
    user: str
    key: str
    admin: bool
    reseller_admin: bool
    groups: tuple[str, ...]

    def __repr__(self) -> str:  # the key stays out of every repr
        return f"_User({self.account}:{self.user}, admin={self.admin})"


@dataclass(frozen=True)
class S3Credentials:
    """For an S3 front end: the secret to check a signature with, and who it belongs to."""

    identity: Identity
    storage_account: str  # e.g. "AUTH_test": where the user's buckets live
    secret_key: str

    def __repr__(self) -> str:
        return f"S3Credentials({self.identity.user!r}, {self.storage_account!r})"


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if prefix and not prefix.endswith("_"):
        prefix += "_"  # Swift accepts "AUTH" for "AUTH_"
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"tempauth: reseller prefix {prefix!r} must be letters, digits or '-' ending in '_'"
        )
    return prefix


def _check_user(u: TempAuthUser) -> None:
    where = f"tempauth user {u.account!r}:{u.user!r}"
    if not u.account or not u.user:
        raise ValueError(f"{where}: account and user must not be empty")
    if ":" in u.account or "/" in u.account or "," in u.account + u.user:
        raise ValueError(f"{where}: account may not contain ':' or '/', names may not contain ','")
    if len(u.account.encode()) > _NAME_BYTES_MAX or len(u.user.encode()) > _NAME_BYTES_MAX:
        raise ValueError(f"{where}: account and user names are limited to {_NAME_BYTES_MAX} bytes")
    if not u.key:
        raise ValueError(f"{where}: key must not be empty")  # the key itself is never shown


def _load_users(config: TempAuthConfig) -> dict[str, _User]:
    users: dict[str, _User] = {}
    for u in config.users:
        _check_user(u)
        name = f"{u.account}:{u.user}"
        if name in users:
            raise ValueError(f"tempauth user {name!r} is listed twice")
        groups = tuple(g for g in u.groups if g not in (_ADMIN, RESELLER_ADMIN))
        users[name] = _User(
            account=u.account,
            user=u.user,
            key=u.key,
            admin=u.admin or _ADMIN in u.groups,
            reseller_admin=u.reseller_admin or RESELLER_ADMIN in u.groups,
            groups=groups,
        )
    return users


def _first(headers: dict[str, str], *names: str) -> str:
    """The first non-empty header among `names` (Swift's fallbacks), or ""."""
    for name in names:
        value = headers.get(name, "")
        if value:
            return value
    return ""


class TempAuth:
    """Swift's tempauth, with stateless signed tokens. One instance per proxy worker."""

    def __init__(self, config: TempAuthConfig, secret: bytes, clock: Clock) -> None:
        if not config.reseller_prefixes:
            raise ValueError("tempauth: at least one reseller prefix is required")
        if config.token_life_s <= 0:
            raise ValueError("tempauth: token_life_s must be positive")
        prefixes = tuple(_normalise_prefix(p) for p in config.reseller_prefixes)
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("tempauth: reseller prefixes must be unique")
        require_group = {_normalise_prefix(p): g for p, g in config.require_group.items()}
        unknown = sorted(set(require_group) - set(prefixes))
        if unknown:
            raise ValueError(f"tempauth: require_group names unknown prefix {unknown[0]!r}")
        self.policy = Policy(prefixes, require_group)
        self.reseller_prefix = prefixes[0]  # tokens and storage URLs use the first prefix
        self.token_life_s = config.token_life_s
        self._users = _load_users(config)
        self._tokens = DeploymentTokens(
            {name: u.key for name, u in self._users.items()}, secret, self.reseller_prefix
        )
        self._codec = self._tokens.codec
        self._clock = clock

    @classmethod
    def from_deployment(cls, deployment: DeploymentConfig, clock: Clock) -> TempAuth:
        """Build from a whole deployment; the secret is tempauth.secret or derived from the
        cluster's hash path salt (docs/auth.md, "Token secret")."""
        cluster, ta = deployment.cluster, deployment.tempauth
        secret = derive_secret(ta.secret, cluster.hash_path_prefix, cluster.hash_path_suffix)
        return cls(ta, secret, clock)

    def __repr__(self) -> str:
        return f"TempAuth(prefixes={self.policy.reseller_prefixes!r}, users={len(self._users)})"

    # -- identities ------------------------------------------------------------------------

    def _identity(self, user: _User, expires: float) -> Identity:
        groups = [user.account, f"{user.account}:{user.user}", *user.groups]
        if user.reseller_admin:
            groups.append(RESELLER_ADMIN)
        if user.admin:
            groups.extend(p + user.account for p in self.policy.reseller_prefixes)
        return Identity(
            user=f"{user.account}:{user.user}",
            account=user.account,
            groups=tuple(dict.fromkeys(groups)),
            expires=expires,
            admin=user.admin,
            reseller_admin=user.reseller_admin,
        )

    def _check_credentials(self, account: str, user: str, key: str) -> _User | None:
        found = self._users.get(f"{account}:{user}")
        # Compare against something even for an unknown user, so timing says nothing.
        expected = found.key if found is not None else "\x00unknown user\x00"
        # Digests first, so the comparison does not even leak the key's length;
        # surrogateescape: a header that is not valid UTF-8 is a wrong key, not a crash.
        given = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        ok = hmac.compare_digest(hashlib.sha256(expected.encode("utf-8")).digest(), given)
        return found if ok and found is not None else None

    def _verify(self, token: str) -> Identity | None:
        claims = self._tokens.verify(token, self._clock.time())
        if claims is None:
            return None
        return self._identity(self._users[f"{claims.account}:{claims.user}"], claims.expires)

    def owns_token(self, token: str) -> bool:
        """Whether `token` is in this provider's namespace (so a bad one is a hard 401)."""
        return token.startswith(self.reseller_prefix)

    def authenticate(self, headers: Mapping[str, str]) -> Identity | None:
        """Who is calling, from X-Auth-Token (or X-Storage-Token) and X-Service-Token.

        Returns None for a request without a token of ours (it is then anonymous: only a
        referrer ACL can let it through). Raises InvalidToken, carrying the 401 to send, for a
        token of ours that is forged, damaged, expired, or whose user or key has changed.
        An invalid X-Service-Token is ignored, as is a service token without a user token.
        """
        h = lower_headers(headers)
        token = _first(h, "x-auth-token", "x-storage-token")
        if not token or not self.owns_token(token):
            return None
        identity = self._verify(token)
        if identity is None:
            raise InvalidToken(unauthorized(None))
        service_token = h.get("x-service-token", "")
        service = self._verify(service_token) if service_token else None
        if service is None:
            return identity
        return dataclasses.replace(
            identity, service_groups=service.groups, service_user=service.user
        )

    def issue_token(self, account: str, user: str) -> tuple[str, int]:
        """A fresh token for a configured user and its expiry time (seconds since the epoch).

        Each call mints a new token; tokens are not stored, so there is nothing to reuse.
        """
        u = self._users[f"{account}:{user}"]
        expires = math.ceil(self._clock.time()) + self.token_life_s
        kf = self._codec.key_fingerprint(f"{account}:{user}", u.key)
        return self._codec.mint(TokenClaims(account, user, expires, kf)), expires

    def s3_credentials(self, access_key: str) -> S3Credentials | None:
        """Swift tempauth's S3 mapping: the access key is "account:user", the secret its key."""
        user = self._users.get(access_key)
        if user is None:
            return None
        expires = self._clock.time() + self.token_life_s
        return S3Credentials(
            identity=self._identity(user, expires),
            storage_account=self.reseller_prefix + user.account,
            secret_key=user.key,
        )

    # -- the auth endpoint -----------------------------------------------------------------

    def handle_auth_get(
        self,
        headers: Mapping[str, str],
        public_base_url: str,
        path: str = "/auth/v1.0",
        method: str = "GET",
    ) -> AuthResponse:
        """Answer a request to the auth endpoint (see is_auth_path for the paths).

        200 with X-Auth-Token, X-Storage-Token, X-Auth-Token-Expires (seconds left) and
        X-Storage-Url (`public_base_url` + "/v1/" + first reseller prefix + account); 401 for
        missing or wrong credentials; 405 for methods other than GET; 400 for other paths.
        """
        if method.upper() != "GET":
            body = b"405 Method Not Allowed: the auth endpoint only answers GET.\n"
            return AuthResponse(405, {"Allow": "GET", "Content-Type": "text/plain"}, body)
        parsed = _credentials_from(path, lower_headers(headers))
        if isinstance(parsed, AuthResponse):
            return parsed
        account, user_name, key = parsed
        user = self._check_credentials(account, user_name, key)
        if user is None:
            body = b"401 Unauthorized: unknown user or wrong key.\n"
            return unauthorized(account, body)
        token, expires = self.issue_token(user.account, user.user)
        storage_url = (
            public_base_url.rstrip("/") + "/v1/" + quote(self.reseller_prefix + user.account)
        )
        return AuthResponse(
            200,
            {
                "X-Auth-Token": token,
                "X-Storage-Token": token,
                "X-Auth-Token-Expires": str(int(expires - self._clock.time())),
                "X-Storage-Url": storage_url,
                "Content-Type": "text/plain; charset=UTF-8",
            },
            b"",
        )

    # -- authorization ---------------------------------------------------------------------

    def authorize(
        self,
        identity: Identity | None,
        method: str,
        parts: PathParts,
        *,
        container_read_acl: str | None = None,
        container_write_acl: str | None = None,
        account_acl: AccountAcl | None = None,
        referrer: str | None = None,
    ) -> Decision:
        """Decide whether `identity` (None: anonymous) may do `method` on `parts`.

        Pass the container's stored X-Container-Read/Write for container and object requests
        (authorize picks the one that applies), the request's Referer, and the account's ACL
        (`AccountAcl()` if none is set). With `account_acl=None` the decision may come back
        with `needs_account_acl`: fetch it and call again. COPY: authorize a GET of the source
        and a PUT of the destination.
        """
        return authorize(
            self.policy,
            identity,
            method,
            parts,
            container_read_acl=container_read_acl,
            container_write_acl=container_write_acl,
            account_acl=account_acl,
            referrer=referrer,
        )


def is_auth_path(path: str) -> bool:
    """Whether the proxy should hand a request to handle_auth_get rather than the Swift API."""
    return path == "/auth" or path.startswith("/auth/") or path.rstrip("/") == "/v1.0"


def _bad_auth_path() -> AuthResponse:
    body = b"400 Bad Request: use GET /auth/v1.0 (or /auth/v1/<account>/auth).\n"
    return AuthResponse(400, {"Content-Type": "text/plain"}, body)


def _credentials_from(path: str, h: dict[str, str]) -> tuple[str, str, str] | AuthResponse:
    """(account, user, key) from an auth request, following Swift's header fallbacks."""
    segments = [s for s in path.split("/") if s]
    if segments[:1] == ["auth"]:
        segments = segments[1:]
    if len(segments) == 3 and segments[0] == "v1" and segments[2] == "auth":
        # GET /auth/v1/<account>/auth: X-Storage-User may be the bare user name.
        account = segments[1]
        user = h.get("x-storage-user", "")
        if not user:
            account_user = h.get("x-auth-user", "")
            acct2, sep, user = account_user.partition(":")
            if not sep or acct2 != account:
                return unauthorized(account)
        key = _first(h, "x-storage-pass", "x-auth-key")
    elif segments in (["v1.0"], ["auth"], ["v1"]):
        account, sep, user = _first(h, "x-auth-user", "x-storage-user").partition(":")
        if not sep:
            return unauthorized(None)
        key = _first(h, "x-auth-key", "x-storage-pass")
    else:
        return _bad_auth_path()
    if not (account and user and key):
        return unauthorized(account)
    if max(len(account), len(user), len(key)) > _CREDENTIAL_BYTES_MAX:
        return unauthorized(None)
    return account, user, key
