"""The S3 front's aiohttp middleware factory, as proxy/app.py installs it:

    app.middlewares.append(s3_middleware(lambda: app_state))

See proxy/s3/frontend.py for what it does and docs/s3.md for the S3 API it serves.
"""

from __future__ import annotations

from proxy.s3.frontend import ProxyStateLike, s3_middleware

__all__ = ["ProxyStateLike", "s3_middleware"]
