"""The JSON log lines: one object per line with the request id and the caller's fields."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator

from common.log import (
    AccessLog,
    _sole_json_handler,
    flush_logs,
    get_logger,
    request_id,
    setup_logging,
)


@contextlib.contextmanager
def _json_root() -> Iterator[io.StringIO]:
    """The root logger as `setup_logging` makes it (JSON) writing to a StringIO; restored
    afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("svc-under-test", "INFO", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_json_line_carries_request_id_pid_and_fields() -> None:
    with _json_root() as stream:
        token = request_id.set("tx123")
        try:
            get_logger("cairn.test").info(
                "request", extra={"fields": {"status": 201, "elapsed_s": 0.5, "odd": {1, 2}}}
            )
        finally:
            request_id.reset(token)
        get_logger("cairn.test").debug("not at INFO")
        (line,) = stream.getvalue().splitlines()
        rec = json.loads(line)
        assert rec["service"] == "svc-under-test"
        assert rec["request_id"] == "tx123"
        assert rec["pid"] == os.getpid()
        assert rec["msg"] == "request" and rec["level"] == "info"
        assert rec["logger"] == "cairn.test"
        assert rec["status"] == 201 and rec["elapsed_s"] == 0.5
        assert rec["odd"] == str({1, 2})  # not JSON: written as its str()


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _setup(stream: io.StringIO) -> None:
    setup_logging("svc-under-test", "INFO", "text")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]


def test_lines_of_one_loop_turn_go_out_in_one_write_at_its_end() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = _CountingStream()
    try:
        _setup(stream)
        log = get_logger("cairn.test")

        async def go() -> tuple[str, str]:
            for i in range(3):
                log.info("line %d", i)
            during = stream.getvalue()
            await asyncio.sleep(0)  # the end of this turn
            await asyncio.sleep(0)
            return during, stream.getvalue()

        during, after = asyncio.run(go())
        assert during == ""
        assert [ln.split(" cairn.test ")[1] for ln in after.splitlines()] == [
            "line 0 request_id=-",
            "line 1 request_id=-",
            "line 2 request_id=-",
        ]
        assert stream.writes == 1
        log.info("outside any loop")  # written at once
        assert stream.getvalue().endswith("outside any loop request_id=-\n")
        assert stream.writes == 2
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_flush_logs_writes_what_still_waits() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = _CountingStream()
    try:
        _setup(stream)

        async def go() -> str:
            get_logger("cairn.test").warning("before exit")
            flush_logs()
            return stream.getvalue()

        assert "before exit" in asyncio.run(go())
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_access_log_writes_the_line_logger_info_would() -> None:
    with _json_root() as stream:
        root = logging.getLogger()
        # nothing else listens: the line skips the logging module's record machinery
        assert _sole_json_handler(get_logger("cairn.test.access")) is root.handlers[0]
        fields = {"method": "PUT", "path": "/a/c/o", "status": 201, "odd": {3}}
        token = request_id.set("tx-access")
        try:
            AccessLog("cairn.test.access").write(dict(fields))
            get_logger("cairn.test.access").info("request", extra={"fields": dict(fields)})
        finally:
            request_id.reset(token)
        fast, slow = (json.loads(line) for line in stream.getvalue().splitlines())
        assert abs(fast.pop("ts") - slow.pop("ts")) < 5
        assert fast == slow
        assert fast["request_id"] == "tx-access" and fast["odd"] == str({3})
        root.setLevel("WARNING")
        AccessLog("cairn.test.access").write(dict(fields))
        assert len(stream.getvalue().splitlines()) == 2  # below the level: nothing


def test_access_log_goes_through_logging_when_another_handler_listens() -> None:
    with _json_root() as stream:
        root = logging.getLogger()
        extra = _ListHandler()
        root.addHandler(extra)
        assert _sole_json_handler(get_logger("cairn.test.access")) is None
        AccessLog("cairn.test.access").write({"status": 200})
        assert [r.fields for r in extra.records] == [{"status": 200}]  # type: ignore[attr-defined]
        assert json.loads(stream.getvalue())["status"] == 200
        root.removeHandler(extra)
        stream.truncate(0)
        stream.seek(0)
        _setup(stream)  # text format: the logging path as well
        AccessLog("cairn.test.access").write({"status": 204})
        assert stream.getvalue().rstrip().endswith("request request_id=- status=204")
