"""The exceptions of the lean HTTP/1.1 client: one family, so a call site maps them in one place."""

from __future__ import annotations

__all__ = [
    "BodyTooLarge",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HeadersTooLarge",
    "InvalidRequest",
    "LeanHTTPError",
    "PoolClosed",
    "ProtocolError",
    "RequestTimeout",
]


class LeanHTTPError(Exception):
    """Anything that kept a request from getting a whole response."""


class ProtocolError(LeanHTTPError):
    """The peer's bytes are not a valid HTTP/1.1 response (or break one of our limits)."""


class HeadersTooLarge(ProtocolError):
    """The status line and headers are longer than `header_bytes_max`."""


class BodyTooLarge(ProtocolError):
    """The body is (or announces itself as) longer than `body_bytes_max`."""


class ConnectionClosed(LeanHTTPError):
    """The peer closed the connection before the response was complete.

    `before_response` is True when not one byte of the response had arrived: on a reused
    keep-alive connection that means the peer had closed it while idle, and the request is
    worth sending once more on a new connection.
    """

    def __init__(self, message: str, *, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response


class ConnectError(LeanHTTPError):
    """No connection could be made to the peer (refused, unreachable)."""


class ConnectTimeout(ConnectError, TimeoutError):
    """The connection was not made within `connect_timeout_s`."""


class RequestTimeout(LeanHTTPError, TimeoutError):
    """The whole response did not arrive within the request's `timeout_s`."""


class PoolClosed(LeanHTTPError):
    """The pool was closed; it takes no more requests."""


class InvalidRequest(LeanHTTPError, ValueError):
    """The request itself cannot be sent (a control character in a header, a bad method)."""
