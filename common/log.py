"""Structured logs: one JSON object per line, carrying the request id across services.

The request id is Swift's transaction id (``X-Trans-Id``): the proxy makes one per request,
passes it to every storage server it calls, and each server logs it. It lives in a context
variable so every log line written while handling a request carries it without plumbing.
Secrets are never logged: access logs name only a fixed set of safe fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

__all__ = [
    "REDACTED_HEADERS",
    "AccessLog",
    "flush_logs",
    "get_logger",
    "new_trans_id",
    "request_id",
    "setup_logging",
]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Headers whose values must never reach a log line.
REDACTED_HEADERS = frozenset(
    {
        "authorization",
        "x-auth-token",
        "x-storage-token",
        "x-service-token",
        "x-auth-key",
        "x-storage-pass",
        "x-amz-security-token",
        "cookie",
    }
)


def new_trans_id(suffix: str = "") -> str:
    """A transaction id like Swift's: 'tx' + random hex + '-' + hex time (+ suffix)."""
    return f"tx{uuid.uuid4().hex[:21]}-{int(time.time()):010x}{suffix}"


# One encoder for every line: json.dumps(..., default=str) would build a new one per call.
_ENCODER = json.JSONEncoder(default=str)


class _Pid:
    """This process's id, read once per process (a forked worker reads its own)."""

    value = os.getpid()

    @classmethod
    def refresh(cls) -> None:
        cls.value = os.getpid()


os.register_at_fork(after_in_child=_Pid.refresh)


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            fields if isinstance(fields, dict) else None,
            exc,
        )

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        msg: str,
        fields: dict[str, Any] | None,
        exc: str | None = None,
    ) -> str:
        out: dict[str, Any] = {
            "ts": round(created, 6),
            "level": levelname.lower(),
            "service": self.service,
            "pid": _Pid.value,
            "logger": name,
            "msg": msg,
            "request_id": request_id.get(),
        }
        if fields:
            out.update(fields)
        if exc is not None:
            out["exc"] = exc
        return _ENCODER.encode(out)


class _TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        return f"{line} request_id={request_id.get()} {extra}".rstrip()


class _TurnBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines logged during one turn of an event loop
    together, at the end of that turn: one write (and one system call) for the access
    lines of every request the turn finished, instead of one each. Lines logged outside a
    running loop (other threads, startup, shutdown) are written at once, after any still
    waiting. `flush()` writes what waits (logging.shutdown calls it at exit)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def queue_line(self, line: str) -> None:
        """Write `line` at the end of this loop turn (at once outside a loop); the caller
        holds `self.lock`."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._waiting.append(line + self.terminator)
        if loop is None:
            self._write_waiting()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            # a closed or broken stream: these lines are lost (as a failed write loses them)
            with contextlib.suppress(OSError, ValueError):
                self._write_waiting()

    def _write_waiting(self) -> None:
        if self._waiting:
            text = "".join(self._waiting)
            self._waiting.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()


class AccessLog:
    """One line per request, as `get_logger(name).info(msg, extra={"fields": fields})` would
    write it, without the logging module's per-record steps (record, handler chain, filters)
    when the JSON handler that `setup_logging` installed is the only one listening: the
    access line is the one log line every request of every daemon writes (~15% of a small
    request's server CPU went through `Logger.info`). With any other arrangement (text
    format, another handler such as pytest's, filters, a disabled logger) it falls back to
    `Logger.info`, so what is written and where never differs."""

    def __init__(self, name: str, msg: str = "request") -> None:
        self.logger = logging.getLogger(name)
        self.msg = msg

    def write(self, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _sole_json_handler(logger)
        if handler is None:
            logger.info(self.msg, extra={"fields": fields})
            return
        formatter = handler.formatter
        assert isinstance(formatter, _JsonFormatter)
        line = formatter.line(time.time(), "INFO", logger.name, self.msg, fields)
        with handler.lock:  # type: ignore[union-attr]
            handler.queue_line(line)


def _sole_json_handler(logger: logging.Logger) -> _TurnBatchedHandler | None:
    """The root's JSON turn-batched handler when it alone would see `logger`'s INFO lines."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or node.disabled or not node.propagate:
            return None
        node = node.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters:
        return None
    handler = handlers[0]
    if (
        type(handler) is not _TurnBatchedHandler
        or handler.filters
        or handler.level > logging.INFO
        or not isinstance(handler.formatter, _JsonFormatter)
    ):
        return None
    return handler


def flush_logs() -> None:
    """Write every log line still waiting (before a process ends with os._exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger of this process once, writing to stderr."""
    handler = _TurnBatchedHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(service) if fmt == "json" else _TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither formatter prints the caller's file and line, the thread or the process
    # name: skip collecting them for every record (a stack walk and several lookups per
    # line; the logging docs' own advice for a busy process). Our "pid" field is _Pid's.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp's own access log would print raw request lines; we write our own.
    logging.getLogger("aiohttp.access").disabled = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
