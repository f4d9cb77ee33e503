"""Helpers shared by the S3 front tests (test_front*.py; their fixtures are in conftest.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, int, dict[str, Any]]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]


def raw(method: str, url: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:  # its response holds the socket: close it now, not at garbage collection
            return e.code, dict(e.headers), e.read()
