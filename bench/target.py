"""Where the load goes: a storage endpoint that turns (container, object) into signed requests.

`Target` is the seam for API flavours. `SwiftTarget` (storage URL + token, the token being
a header that never changes) is what the Swift benchmarks use; an S3 target would produce
a presigned URL per request (botocore's `generate_presigned_url`) or SigV4 headers with
`UNSIGNED-PAYLOAD` from the same two methods, and the Python generator runs unchanged:
`S3Target` does the former (path-style, SigV4 query signing by botocore).
wrk needs fixed headers, so it takes `static_headers()` and is only used with targets that
have them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

__all__ = ["AuthError", "S3Target", "SwiftTarget", "Target", "swift_auth"]

AUTH_TIMEOUT_S = 30.0


class AuthError(RuntimeError):
    pass


class Target(Protocol):
    """A place to send object requests to."""

    @property
    def base_url(self) -> str:
        """scheme://host:port of the endpoint."""
        ...

    def request(
        self, method: str, container: str, obj: str | None = None, query: str = ""
    ) -> tuple[str, dict[str, str]]:
        """The URL and the auth headers for one request."""
        ...

    def static_headers(self) -> dict[str, str] | None:
        """Headers valid for every request (None if requests are signed one by one)."""
        ...

    def container_path(self, container: str) -> str:
        """The quoted path of a container, for tools that build their own request lines."""
        ...


@dataclass(frozen=True)
class SwiftTarget:
    storage_url: str  # e.g. http://127.0.0.1:8080/v1/AUTH_admin
    token: str

    @property
    def base_url(self) -> str:
        p = urlsplit(self.storage_url)
        return f"{p.scheme}://{p.netloc}"

    def container_path(self, container: str) -> str:
        path = urlsplit(self.storage_url).path.rstrip("/")
        return f"{path}/{quote(container, safe='')}"

    def request(
        self, method: str, container: str, obj: str | None = None, query: str = ""
    ) -> tuple[str, dict[str, str]]:
        url = self.base_url + self.container_path(container)
        if obj is not None:
            url += "/" + quote(obj, safe="")
        if query:
            url += "?" + query
        return url, {"X-Auth-Token": self.token}

    def static_headers(self) -> dict[str, str] | None:
        return {"X-Auth-Token": self.token}


def swift_auth(
    auth_url: str, user: str, key: str, timeout_s: float = AUTH_TIMEOUT_S
) -> SwiftTarget:
    """Swift v1 auth (tempauth and friends): GET auth_url with X-Auth-User/X-Auth-Key."""
    if urlsplit(auth_url).scheme not in ("http", "https"):
        raise AuthError(f"auth URL must be http(s): {auth_url!r}")
    req = urllib.request.Request(auth_url, headers={"X-Auth-User": user, "X-Auth-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            token = resp.headers.get("X-Auth-Token") or resp.headers.get("X-Storage-Token")
            url = resp.headers.get("X-Storage-Url")
    except urllib.error.HTTPError as e:
        e.close()
        raise AuthError(f"auth at {auth_url} refused: HTTP {e.code}") from None
    except OSError as e:
        raise AuthError(f"auth at {auth_url} failed: {e}") from None
    if not token or not url:
        raise AuthError(f"auth at {auth_url} returned no X-Auth-Token/X-Storage-Url")
    return SwiftTarget(storage_url=url, token=token)


_SIGNERS: dict[S3Target, Any] = {}  # one botocore signer per target, built on first use


@dataclass(frozen=True)
class S3Target:
    """An S3 endpoint, path-style; every request gets its own SigV4 presigned URL.

    Signing costs the load generator about 0.2-0.3 ms of CPU per request (botocore; it is
    counted in the generator's CPU figure). Buckets play the part of containers.
    """

    endpoint: str  # e.g. http://127.0.0.1:8080
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    expires_s: int = 3600

    @property
    def base_url(self) -> str:
        p = urlsplit(self.endpoint)
        return f"{p.scheme}://{p.netloc}"

    def container_path(self, container: str) -> str:
        return "/" + quote(container, safe="")

    def request(
        self, method: str, container: str, obj: str | None = None, query: str = ""
    ) -> tuple[str, dict[str, str]]:
        from botocore.awsrequest import AWSRequest

        if query.startswith("format=json"):  # a Swift listing query: list the bucket instead
            limit = query.rpartition("limit=")[2] if "limit=" in query else "1000"
            query = f"list-type=2&max-keys={limit}"
        url = self.base_url + self.container_path(container)
        if obj is not None:
            url += "/" + quote(obj, safe="")
        if query:
            url += "?" + query
        req = AWSRequest(method=method, url=url)
        self._signer().add_auth(req)
        return str(req.url), {}

    def _signer(self) -> Any:
        signer = _SIGNERS.get(self)
        if signer is None:
            from botocore.auth import S3SigV4QueryAuth
            from botocore.credentials import Credentials

            creds = Credentials(self.access_key, self.secret_key)
            signer = S3SigV4QueryAuth(creds, "s3", self.region, expires=self.expires_s)
            _SIGNERS[self] = signer
        return signer

    def static_headers(self) -> dict[str, str] | None:
        return None
