"""The exceptions of the lean HTTP/1.1 server's request parser: one family, each with the
status a server would answer it with."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "HeadersTooLarge",
    "LeanServerError",
    "Truncated",
]


class LeanServerError(Exception):
    """The bytes received are not (the start of) a request the lean parser can frame."""

    status = 400


class BadRequest(LeanServerError):
    """A malformed request line or header, or a bad Content-Length."""


class HeadersTooLarge(LeanServerError):
    """The request line and headers are longer than `header_bytes_max`."""

    status = 431


class BodyTooLarge(LeanServerError):
    """The Content-Length is more than `body_bytes_max`."""

    status = 413


class Truncated(LeanServerError):
    """The peer closed the connection in the middle of a request."""
