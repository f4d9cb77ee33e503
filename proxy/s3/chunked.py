"""Sans-IO decoder for S3's `aws-chunked` content encoding.

Feed it the request body in pieces of any size; it returns events: `ChunkData` with
decoded bytes, then one `BodyEnd` carrying the trailers and the verified trailing
checksum. It never does I/O and never buffers more than one framing line
(`line_bytes_max`) plus the piece it was handed.

Wire forms (x-amz-content-sha256 says which):
  STREAMING-AWS4-HMAC-SHA256-PAYLOAD
      <hex>;chunk-signature=<sig>\\r\\n<data>\\r\\n ... 0;chunk-signature=<sig>\\r\\n\\r\\n
  STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
      as above, but after the final chunk's line: trailer lines, then
      x-amz-trailer-signature:<sig>\\r\\n\\r\\n
  STREAMING-UNSIGNED-PAYLOAD-TRAILER
      <hex>\\r\\n<data>\\r\\n ... 0\\r\\n<trailer lines>\\r\\n

Chunk n's signature signs "AWS4-HMAC-SHA256-PAYLOAD\\n<date>\\n<scope>\\n<sig n-1>\\n
<sha256('')>\\n<sha256(data n)>" with the request's signing key, sig 0 being the
Authorization header's (seed) signature. The trailer signature signs
"AWS4-HMAC-SHA256-TRAILER\\n<date>\\n<scope>\\n<final chunk sig>\\n<sha256(trailers)>",
the trailers canonicalised as "name:value\\n" each.

Data events are handed out before the chunk that holds them is verified, so that memory
stays bounded: a consumer may only commit what it stored once `BodyEnd` has been returned.
Any error is terminal; every later call raises it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import NoReturn

from proxy.s3.authtypes import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    StreamingSigning,
    VerifiedAuth,
)
from proxy.s3.checksums import ChecksumAlgorithm, Hasher, new_hasher
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap, HeadersLike

__all__ = [
    "AwsChunkedDecoder",
    "BodyEnd",
    "ChunkData",
    "Event",
    "is_aws_chunked",
    "strip_aws_chunked",
]

LINE_BYTES_MAX = 4096
TRAILER_LINES_MAX = 16
CHUNK_BYTES_MAX = 5 * 1024**3
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIG_RE = re.compile(rb"chunk-signature=([0-9a-f]{64})")
_EXT_RE = re.compile(rb"(;[!#$%&'*+.^_`|~0-9A-Za-z-]+(=[^;\r\n]*)?)*")
_TRAILER_NAME_RE = re.compile(r"[a-z0-9-]{1,64}")
_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)


@dataclass(frozen=True, slots=True)
class ChunkData:
    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The body is complete and every signature and checksum checked out."""

    size_bytes: int
    trailers: tuple[tuple[str, str], ...]
    checksum: tuple[ChecksumAlgorithm, str] | None  # verified trailing checksum (base64)


Event = ChunkData | BodyEnd


class _State(Enum):
    CHUNK_LINE = auto()
    DATA = auto()
    DATA_CRLF = auto()
    FINAL_CRLF = auto()  # signed, no trailer: the empty line after the zero chunk
    TRAILER = auto()
    DONE = auto()
    ERROR = auto()


def is_aws_chunked(headers: HeadersLike) -> bool:
    """True if the body is aws-chunked (by Content-Encoding or the streaming sha256 mode)."""
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    encodings = [e.strip().lower() for e in (hmap.get("content-encoding") or "").split(",")]
    return "aws-chunked" in encodings or (hmap.get("x-amz-content-sha256") or "") in _MODES


def strip_aws_chunked(content_encoding: str | None) -> str | None:
    """The Content-Encoding to store: the client's own encodings without aws-chunked."""
    if content_encoding is None:
        return None
    kept = [e.strip() for e in content_encoding.split(",") if e.strip().lower() != "aws-chunked"]
    return ",".join(e for e in kept if e) or None


def _parse_trailer_decl(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if len(names) > TRAILER_LINES_MAX or not all(_TRAILER_NAME_RE.fullmatch(n) for n in names):
        raise S3Error("InvalidRequest", "The x-amz-trailer header is not valid.")
    return names


class AwsChunkedDecoder:
    """Decode one aws-chunked body; see the module docstring for the wire forms."""

    def __init__(
        self,
        *,
        mode: str,
        decoded_length: int | None,
        streaming: StreamingSigning | None = None,
        trailer: str | None = None,
        line_bytes_max: int = LINE_BYTES_MAX,
        chunk_bytes_max: int = CHUNK_BYTES_MAX,
    ) -> None:
        if mode not in _MODES:
            raise S3Error("InvalidRequest", "aws-chunked needs a STREAMING-* x-amz-content-sha256")
        self._signed = mode != STREAMING_UNSIGNED_TRAILER
        self._with_trailer = mode != STREAMING_SIGNED
        assert not self._signed or streaming is not None, "signed streaming needs a signer"
        self._streaming = streaming
        self._prev_sig = streaming.seed_signature if streaming else ""
        self._declared = _parse_trailer_decl(trailer)
        if self._declared and not self._with_trailer:
            raise S3Error("InvalidRequest", "x-amz-trailer needs a *-TRAILER payload mode")
        self._checksum_alg, self._checksum = self._trailer_checksum()
        self._decoded_length = decoded_length
        self._line_bytes_max = line_bytes_max
        self._chunk_bytes_max = chunk_bytes_max
        self._buf = bytearray()
        self._state = _State.CHUNK_LINE
        self._error: S3Error | None = None
        self._remaining = 0
        self._chunk_sig = ""
        self._chunk_hash = hashlib.sha256()
        self._total = 0
        self._trailers: list[tuple[str, str]] = []

    @classmethod
    def from_request(cls, auth: VerifiedAuth, headers: HeadersLike) -> AwsChunkedDecoder:
        """Build the decoder for a verified request whose body is aws-chunked."""
        hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
        raw_length = hmap.get("x-amz-decoded-content-length")
        if raw_length is None:
            if auth.payload_hash == STREAMING_SIGNED:
                raise S3Error(
                    "MissingContentLength",
                    "You must provide the x-amz-decoded-content-length header.",
                )
            length = None
        elif not raw_length.isdigit() or len(raw_length) > 16:
            raise S3Error("InvalidArgument", "x-amz-decoded-content-length is not a number.")
        else:
            length = int(raw_length)
        return cls(
            mode=auth.payload_hash,
            decoded_length=length,
            streaming=auth.streaming,
            trailer=hmap.get("x-amz-trailer"),
        )

    def _trailer_checksum(self) -> tuple[ChecksumAlgorithm | None, Hasher | None]:
        names = [n for n in self._declared if n.startswith("x-amz-checksum-")]
        if len(names) > 1:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- trailer")
        if not names:
            return None, None
        algorithm = ChecksumAlgorithm.from_name(names[0][len("x-amz-checksum-") :])
        return algorithm, new_hasher(algorithm)

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    # ---- feeding --------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the events they complete. Raises S3Error on bad input."""
        if self._error is not None:
            raise self._error
        if self._state is _State.DONE:
            if data:
                self._fail(S3Error("IncompleteBody", "Unexpected data after the final chunk."))
            return []
        self._buf += data
        events: list[Event] = []
        try:
            self._run(events)
        except S3Error as exc:
            self._fail(exc)
        return events

    def close(self) -> None:
        """The body ended (no more bytes will come); raise if it was not complete."""
        if self._error is not None:
            raise self._error
        if self._state is not _State.DONE:
            self._fail(S3Error("IncompleteBody", "The aws-chunked body ended early."))

    def _fail(self, exc: S3Error) -> NoReturn:
        self._state = _State.ERROR
        self._error = exc
        self._buf.clear()
        raise exc

    def _run(self, events: list[Event]) -> None:
        pos = 0
        try:
            while self._state is not _State.DONE:
                if self._state is _State.DATA:
                    pos = self._take_data(pos, events)
                    if self._remaining:
                        return  # the piece ended inside chunk data
                    continue
                line, pos = self._take_line(pos)
                if line is None:
                    return
                self._on_line(line, events)
        finally:
            del self._buf[:pos]
        if self._buf:
            raise S3Error("IncompleteBody", "Unexpected data after the final chunk.")

    def _take_line(self, pos: int) -> tuple[bytes | None, int]:
        end = self._buf.find(b"\r\n", pos, pos + self._line_bytes_max + 2)
        if end < 0:
            if len(self._buf) - pos > self._line_bytes_max:
                raise S3Error("IncompleteBody", "An aws-chunked framing line is too long.")
            return None, pos
        return bytes(self._buf[pos:end]), end + 2

    def _take_data(self, pos: int, events: list[Event]) -> int:
        n = min(self._remaining, len(self._buf) - pos)
        if n == 0:
            return pos
        piece = bytes(self._buf[pos : pos + n])
        self._remaining -= n
        self._account(piece)
        events.append(ChunkData(piece))
        if self._remaining == 0:
            self._verify_chunk()
            self._state = _State.DATA_CRLF
        return pos + n

    def _account(self, piece: bytes) -> None:
        self._total += len(piece)
        if self._decoded_length is not None and self._total > self._decoded_length:
            raise S3Error("IncompleteBody", "More data than x-amz-decoded-content-length.")
        if self._signed:
            self._chunk_hash.update(piece)
        if self._checksum is not None:
            self._checksum.update(piece)

    # ---- lines ----------------------------------------------------------------------------

    def _on_line(self, line: bytes, events: list[Event]) -> None:
        state = self._state
        if state is _State.CHUNK_LINE:
            self._on_chunk_line(line)
        elif state is _State.DATA_CRLF:
            if line:
                raise S3Error("IncompleteBody", "Chunk data is not followed by CRLF.")
            self._state = _State.CHUNK_LINE
        elif state is _State.FINAL_CRLF:
            if line:
                raise S3Error("IncompleteBody", "The final chunk is not followed by CRLF.")
            self._finish(events)
        else:
            assert state is _State.TRAILER
            self._on_trailer_line(line, events)

    def _on_chunk_line(self, line: bytes) -> None:
        size_part, sep, ext = line.partition(b";")
        if not _HEX_RE.fullmatch(size_part):
            raise S3Error("InvalidChunkSizeError", "The chunk size is not a hex number.")
        size = int(size_part, 16)
        if size > self._chunk_bytes_max:
            raise S3Error("InvalidChunkSizeError", "The chunk is larger than allowed.")
        if self._signed:
            match = _SIG_RE.fullmatch(ext) if sep else None
            if match is None:
                raise S3Error("IncompleteBody", "A signed chunk must carry chunk-signature.")
            self._chunk_sig = match.group(1).decode("ascii")
        elif sep and not _EXT_RE.fullmatch(b";" + ext):
            raise S3Error("IncompleteBody", "Malformed chunk extension.")
        self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size:
            self._state = _State.DATA
            return
        self._verify_chunk()
        self._state = _State.TRAILER if self._with_trailer else _State.FINAL_CRLF

    def _verify_chunk(self) -> None:
        """Called at each chunk's end (the zero chunk included) in signed modes."""
        if not self._signed:
            return
        assert self._streaming is not None
        s = self._streaming
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                s.amz_date,
                s.scope,
                self._prev_sig,
                EMPTY_SHA256,
                self._chunk_hash.hexdigest(),
            ]
        )
        self._check_sig(s.sign(sts), self._chunk_sig)

    def _check_sig(self, expected: str, provided: str) -> None:
        if not hmac.compare_digest(expected, provided):
            raise S3Error(
                "SignatureDoesNotMatch",
                "The chunk signature we calculated does not match the signature you provided.",
            )
        self._prev_sig = provided

    def _on_trailer_line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            self._finish(events)
            return
        if len(self._trailers) >= TRAILER_LINES_MAX + 1:
            raise S3Error("MalformedTrailerError")
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not _TRAILER_NAME_RE.fullmatch(name):
            raise S3Error("MalformedTrailerError")
        self._trailers.append((name, value.strip()))

    # ---- the end --------------------------------------------------------------------------

    def _finish(self, events: list[Event]) -> None:
        trailers = self._trailers
        if self._signed and self._with_trailer:
            trailers = self._verify_trailer_signature(trailers)
        if sorted(n for n, _ in trailers) != sorted(self._declared):
            raise S3Error("MalformedTrailerError", "The trailers do not match x-amz-trailer.")
        if self._decoded_length is not None and self._total != self._decoded_length:
            raise S3Error("IncompleteBody")
        checksum = self._verify_checksum(dict(trailers))
        self._state = _State.DONE
        events.append(BodyEnd(self._total, tuple(trailers), checksum))

    def _verify_trailer_signature(self, trailers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not trailers or trailers[-1][0] != "x-amz-trailer-signature":
            raise S3Error("MalformedTrailerError", "The trailer signature is missing.")
        provided = trailers[-1][1]
        rest = trailers[:-1]
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(rest))
        assert self._streaming is not None
        s = self._streaming
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                s.amz_date,
                s.scope,
                self._prev_sig,
                hashlib.sha256(canonical.encode("latin-1")).hexdigest(),
            ]
        )
        self._check_sig(s.sign(sts), provided)
        return rest

    def _verify_checksum(self, trailers: dict[str, str]) -> tuple[ChecksumAlgorithm, str] | None:
        if self._checksum_alg is None or self._checksum is None:
            return None
        expected = trailers[self._checksum_alg.header]
        actual = base64.b64encode(self._checksum.digest()).decode("ascii")
        if expected != actual:
            raise S3Error(
                "BadDigest",
                f"The {self._checksum_alg.value} you specified did not match the calculated "
                "checksum.",
            )
        return self._checksum_alg, actual
