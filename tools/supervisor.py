"""Run a deployment's processes and keep them running.

The supervisor starts every service as a child process (logs in `<data-dir>/logs/`),
restarts one that dies (with back-off), and publishes `<data-dir>/run/state.json` (written
atomically) for `cairn status` and `cairn down`. SIGTERM or SIGINT stops every child
cleanly (SIGTERM, then SIGKILL after a grace period): blockd and the proxy first, then the
storage servers and daemons, so blockd's last cache flush still finds the object servers.

`cairn up --only/--host` runs a subset (e.g. one host's services inside its network
namespace); each such supervisor publishes `<data-dir>/run/state-<tag>.json` instead, and
`cairn status`/`cairn down` act on every supervisor of the data dir.

A file `<data-dir>/run/hold/<service>` holds a service down: the supervisor does not restart
it while the file exists (used by fault tests and operators to keep a node down).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.fsutil import atomic_write_bytes, makedirs_durable
from tools.deployment import ServiceSpec

__all__ = [
    "FRONT_GROUPS",
    "STATE_VERSION",
    "Supervisor",
    "main",
    "read_state",
    "read_states",
    "state_path",
]

STATE_VERSION = 1
_POLL_S = 0.25
_BACKOFF_MAX_S = 10.0
_STOP_GRACE_S = 15.0
# Background daemons (no URL) start this long after the servers, so the servers' start-up
# (and `cairn up`'s readiness wait) does not compete with them for the CPUs.
_DAEMON_DELAY_S = 3.0
# Service groups that are clients of the storage nodes: stopped (and waited for) first.
FRONT_GROUPS = frozenset({"blockd", "proxy"})


def state_path(data_dir: Path, tag: str = "") -> Path:
    return data_dir / "run" / (f"state-{tag}.json" if tag else "state.json")


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == STATE_VERSION else None


def read_state(data_dir: Path, tag: str = "") -> dict[str, object] | None:
    return _read(state_path(data_dir, tag))


def read_states(data_dir: Path) -> list[dict[str, object]]:
    """Every supervisor's state in the data dir (the full one and any `--only` ones)."""
    out = []
    for path in sorted((data_dir / "run").glob("state*.json")):
        state = _read(path)
        if state is not None:
            out.append(state)
    return out


def _stop_children(children: list[_Child]) -> None:
    """SIGTERM each running child, wait up to the grace period for all, SIGKILL the rest."""
    for c in children:
        if c.proc is not None and c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


@dataclass
class _Child:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start_s: float = 0.0
    backoff_s: float = 0.5
    started_s: float = 0.0
    ever_started: bool = False


@dataclass
class Supervisor:
    data_dir: Path
    specs: list[ServiceSpec]
    endpoints: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    config_path: str = ""
    tag: str = ""
    _children: list[_Child] = field(default_factory=list)
    _stopping: bool = False

    def __post_init__(self) -> None:
        self._children = [_Child(s) for s in self.specs]
        makedirs_durable(self.data_dir / "logs")
        makedirs_durable(self.data_dir / "run" / "hold")

    def _held(self, name: str) -> bool:
        return (self.data_dir / "run" / "hold" / name).exists()

    def _start(self, c: _Child) -> None:
        log = open(self.data_dir / "logs" / f"{c.spec.name}.log", "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        c.proc = subprocess.Popen(
            c.spec.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        c.started_s = time.monotonic()
        if c.ever_started:
            c.restarts += 1
        c.ever_started = True

    def start_all(self) -> None:
        now = time.monotonic()
        for c in self._children:
            if not c.spec.url:
                c.next_start_s = now + _DAEMON_DELAY_S
            elif not self._held(c.spec.name):
                self._start(c)
        self.write_state()

    def poll(self) -> None:
        """Restart what died (unless held); called in a loop."""
        now = time.monotonic()
        changed = False
        for c in self._children:
            if c.proc is not None and c.proc.poll() is not None:
                if now - c.started_s > 30:
                    c.backoff_s = 0.5
                c.proc = None
                c.next_start_s = now + c.backoff_s
                c.backoff_s = min(_BACKOFF_MAX_S, c.backoff_s * 2)
                changed = True
            if (
                c.proc is None
                and not self._stopping
                and now >= c.next_start_s
                and not self._held(c.spec.name)
            ):
                self._start(c)
                changed = True
        if changed:
            self.write_state()

    def write_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "supervisor_pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "config": self.config_path,
            "tag": self.tag,
            "endpoints": self.endpoints,
            "credentials": self.credentials,
            "services": [
                {
                    "name": c.spec.name,
                    "url": c.spec.url,
                    "group": c.spec.group,
                    "pid": c.proc.pid if c.proc is not None else None,
                    "restarts": c.restarts,
                    "held": self._held(c.spec.name),
                    # not started yet on purpose (background daemons wait for the servers)
                    "starting": c.proc is None and not c.ever_started,
                }
                for c in self._children
            ],
        }
        atomic_write_bytes(
            state_path(self.data_dir, self.tag), json.dumps(state, indent=1).encode(), mode=0o600
        )

    def stop_all(self) -> None:
        """Stop every child in two stages: first the services that write to the storage
        nodes (`FRONT_GROUPS`: blockd flushes its write-back cache on SIGTERM, the proxy
        finishes its requests), then the storage servers and daemons they were writing to."""
        self._stopping = True
        front = [c for c in self._children if c.spec.group in FRONT_GROUPS]
        back = [c for c in self._children if c.spec.group not in FRONT_GROUPS]
        for stage in (front, back):
            _stop_children(stage)
        with contextlib.suppress(FileNotFoundError):
            state_path(self.data_dir, self.tag).unlink()

    def run_forever(self) -> None:
        stop = False

        def on_signal(_signum: int, _frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not stop:
                self.poll()
                time.sleep(_POLL_S)
        finally:
            self.stop_all()


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.supervisor --data-dir DIR [--config FILE]`: used by `cairn up -d`."""
    p = argparse.ArgumentParser(prog="cairn-supervisor")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--only", action="append", default=[])
    p.add_argument("--host")
    args = p.parse_args(argv)
    from tools.up import prepare

    sup = prepare(args.data_dir.resolve(), args.config, quiet=True, only=args.only, host=args.host)
    sup.start_all()
    sup.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
