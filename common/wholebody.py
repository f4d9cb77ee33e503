"""The whole-body GET between object servers and their internal clients (the proxy's
`read_object`, blockd's store client): the header names and the servers' cap, in one place
for both sides.

A GET carrying BODY_MAX_HEADER takes a body of at most that many bytes (capped by the server
at WHOLE_BODY_BYTES_MAX) whole in the answer, which the object server's fast lane can give;
a longer body is withheld: 204 with WITHHELD_HEADER naming its length, and the client asks
again without the header to have it streamed (objectd/reads.py, objectd/smallget.py;
docs/lean-http-server.md "Reads").
"""

from __future__ import annotations

__all__ = ["BODY_MAX_HEADER", "WHOLE_BODY_BYTES_MAX", "WITHHELD_HEADER"]

BODY_MAX_HEADER = "X-Backend-Body-Bytes-Max"
WITHHELD_HEADER = "X-Backend-Body-Withheld"
WHOLE_BODY_BYTES_MAX = 1024 * 1024
