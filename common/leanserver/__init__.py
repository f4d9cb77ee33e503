"""A lean HTTP/1.1 server lane for small requests between cairn's own servers, in front of
aiohttp (docs/lean-http-server.md).

`RequestParser` and `serialize_response` are sans-IO; `FastLane` / `FastLaneProtocol` serve
connections on asyncio or uvloop and hand a connection to aiohttp at its first request that
is not a registered `FastRoute`.
"""

from common.leanserver._errors import (
    BadRequest,
    BodyTooLarge,
    HeadersTooLarge,
    LeanServerError,
    Truncated,
)
from common.leanserver._parser import (
    BODY_BYTES_MAX,
    HEADER_BYTES_MAX,
    RequestHead,
    RequestParser,
    serialize_response,
    serialize_response_parts,
)
from common.leanserver._protocol import FastLane, FastLaneProtocol, FastRequest, FastRoute, Reply

__all__ = [
    "BODY_BYTES_MAX",
    "HEADER_BYTES_MAX",
    "BadRequest",
    "BodyTooLarge",
    "FastLane",
    "FastLaneProtocol",
    "FastRequest",
    "FastRoute",
    "HeadersTooLarge",
    "LeanServerError",
    "Reply",
    "RequestHead",
    "RequestParser",
    "Truncated",
    "serialize_response",
    "serialize_response_parts",
]
