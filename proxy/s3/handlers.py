"""Every S3 operation mapped onto its handler (each takes an S3Context, returns a response).

The handlers live by area: h_bucket.py, h_object.py, h_multipart.py. This table is checked
against request.OPERATIONS at import, so an operation the classifier can produce always
has a handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.s3.context import S3Context
from proxy.s3.h_bucket import BUCKET_HANDLERS
from proxy.s3.h_multipart import MULTIPART_HANDLERS
from proxy.s3.h_object import OBJECT_HANDLERS
from proxy.s3.request import OPERATIONS

__all__ = ["HANDLERS", "Handler", "dispatch"]

Handler = Callable[[S3Context], Awaitable[web.StreamResponse]]

HANDLERS: dict[str, Handler] = {**BUCKET_HANDLERS, **OBJECT_HANDLERS, **MULTIPART_HANDLERS}
assert set(HANDLERS) == OPERATIONS, sorted(set(HANDLERS) ^ OPERATIONS)


async def dispatch(ctx: S3Context) -> web.StreamResponse:
    return await HANDLERS[ctx.s3.operation](ctx)
