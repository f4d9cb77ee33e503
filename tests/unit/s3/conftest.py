"""Fixtures of the S3 front tests: one front (loopback server over MemoryOps) per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.s3.frontserver import Front, serve_front


@pytest.fixture(scope="module")
def front() -> Iterator[Front]:
    with serve_front() as f:
        yield f


@pytest.fixture
def s3(front: Front) -> Any:
    return front.client()


_counter = iter(range(10**6))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"bkt-{next(_counter)}"
    s3.create_bucket(Bucket=name)
    return name
