"""The JSON log lines: one object per line with the request id and the caller's fields."""

from __future__ import annotations

import io
import json
import logging
import os

from common.log import get_logger, request_id, setup_logging


def test_json_line_carries_request_id_pid_and_fields() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("svc-under-test", "INFO", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
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
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
