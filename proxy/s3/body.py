"""Reading S3 request bodies: aws-chunked decoding plus every integrity check, as a stream.

`UploadBody.chunks()` yields the decoded bytes; every check (chunk signatures, trailing
checksum, Content-MD5, x-amz-checksum-*, x-amz-content-sha256, the declared length) runs
before the iterator finishes, so a store that commits only after the iterator is exhausted
(proxy/objput.py aborts every backend request when it raises) never keeps a bad body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from proxy.s3.authtypes import VerifiedAuth
from proxy.s3.checksums import BodyDigests, BodyVerifier, checksum_from_headers, parse_content_md5
from proxy.s3.chunked import AwsChunkedDecoder, BodyEnd, ChunkData, is_aws_chunked
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap

__all__ = ["READ_CHUNK_BYTES", "UploadBody", "read_small_body"]

READ_CHUNK_BYTES = 64 * 1024


class UploadBody:
    def __init__(
        self,
        request: web.Request,
        verified: VerifiedAuth | None,
        hmap: HeaderMap,
        *,
        bytes_max: int,
    ) -> None:
        self._request = request
        self._bytes_max = bytes_max
        md5 = hmap.get("content-md5")
        self._verifier = BodyVerifier(
            content_md5=parse_content_md5(md5) if md5 is not None else None,
            checksum=checksum_from_headers(hmap),
            sha256_hex=verified.payload_sha256 if verified is not None else None,
        )
        self._decoder: AwsChunkedDecoder | None = None
        if is_aws_chunked(hmap):
            if verified is None or verified.version != "v4" or not verified.is_streaming:
                raise S3Error("InvalidRequest", "aws-chunked bodies need SigV4 streaming auth.")
            self._decoder = AwsChunkedDecoder.from_request(verified, hmap)
            self.length: int | None = self._declared_length(hmap)
        else:
            self.length = request.content_length
            if self.length is None and not request.body_exists:
                self.length = 0
            if self.length is None and "chunked" not in (hmap.get("transfer-encoding") or ""):
                raise S3Error("MissingContentLength")
        if self.length is not None and self.length > bytes_max:
            raise S3Error("EntityTooLarge", extra=[("MaxSizeAllowed", str(bytes_max))])
        self.digests: BodyDigests | None = None
        self._seen = 0

    @staticmethod
    def _declared_length(hmap: HeaderMap) -> int | None:
        value = hmap.get("x-amz-decoded-content-length")
        return int(value) if value is not None and value.isdigit() else None

    def _count(self, total: int) -> None:
        if total > self._bytes_max:
            raise S3Error("EntityTooLarge", extra=[("MaxSizeAllowed", str(self._bytes_max))])

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._decoder is not None:
            async for piece in self._decoded():
                yield piece
            return
        total = 0
        async for piece in self._request.content.iter_chunked(READ_CHUNK_BYTES):
            total += len(piece)
            self._count(total)
            self._verifier.update(piece)
            yield piece
        if self.length is not None and total != self.length:
            raise S3Error("IncompleteBody")
        self.digests = self._verifier.finish()

    async def _decoded(self) -> AsyncIterator[bytes]:
        decoder = self._decoder
        assert decoder is not None
        end: BodyEnd | None = None
        async for piece in self._request.content.iter_chunked(READ_CHUNK_BYTES):
            for event in decoder.feed(piece):
                if isinstance(event, ChunkData):
                    self._seen += len(event.data)
                    self._count(self._seen)
                    self._verifier.update(event.data)
                    yield event.data
                else:
                    end = event
        decoder.close()
        assert end is not None
        digests = self._verifier.finish()
        if end.checksum is not None:
            digests = BodyDigests(digests.size_bytes, digests.md5_hex, end.checksum)
        self.digests = digests


async def read_small_body(
    request: web.Request, verified: VerifiedAuth | None, hmap: HeaderMap, *, bytes_max: int
) -> tuple[bytes, BodyDigests]:
    """The whole (small) body of a request, verified; MaxMessageLengthExceeded if too big."""
    try:
        body = UploadBody(request, verified, hmap, bytes_max=bytes_max)
    except S3Error as exc:
        if exc.code == "EntityTooLarge":
            raise S3Error("MaxMessageLengthExceeded") from exc
        raise
    out = bytearray()
    try:
        async for piece in body.chunks():
            out += piece
    except S3Error as exc:
        if exc.code == "EntityTooLarge":
            raise S3Error("MaxMessageLengthExceeded") from exc
        raise
    assert body.digests is not None
    return bytes(out), body.digests
