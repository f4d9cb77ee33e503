"""Shared code for all cairn services: config, timestamps, clock, logs, metrics, servers, files."""

import sys

# Assertions are part of our correctness discipline (paired checks around every on-disk and
# wire record); `python -O` would strip them silently, so refuse to run without them.
if sys.flags.optimize:  # pragma: no cover - exercised only by running under -O
    raise SystemExit("cairn refuses to run under python -O: its assertions must stay on")
