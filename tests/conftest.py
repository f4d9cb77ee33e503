"""Shared test fixtures. Real parts only: real sockets on 127.0.0.1, real files, real LMDB."""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def rng() -> random.Random:
    """A seeded RNG instance; tests never touch the global random state."""
    return random.Random(1234)
