"""A lean HTTP/1.1 client for small requests between cairn's own servers (docs/lean-http-client.md).

`ResponseParser` and `serialize_request` are sans-IO; `LeanPool` is the asyncio client.
"""

from common.leanhttp._client import LeanPool
from common.leanhttp._errors import (
    BodyTooLarge,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    HeadersTooLarge,
    InvalidRequest,
    LeanHTTPError,
    PoolClosed,
    ProtocolError,
    RequestTimeout,
)
from common.leanhttp._parser import (
    BODY_BYTES_MAX,
    HEADER_BYTES_MAX,
    Body,
    Response,
    ResponseParser,
    serialize_request,
    serialize_request_parts,
)

__all__ = [
    "BODY_BYTES_MAX",
    "HEADER_BYTES_MAX",
    "Body",
    "BodyTooLarge",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HeadersTooLarge",
    "InvalidRequest",
    "LeanHTTPError",
    "LeanPool",
    "PoolClosed",
    "ProtocolError",
    "RequestTimeout",
    "Response",
    "ResponseParser",
    "serialize_request",
    "serialize_request_parts",
]
