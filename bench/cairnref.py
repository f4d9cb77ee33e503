"""A cairn all-in-one for benchmarks, started and stopped the way an operator does it.

`cairn up --config <file> --data-dir <dir> -d` with the default all-in-one deployment
(2 storage nodes x 2 devices, 3 replicas, part power 10) on free loopback ports, proxy
workers = cores, block storage off (it plays no part in the object benchmarks). Stopped with
`cairn down`; if that fails, every process of the supervisor's tree is killed.

`server_pids` are the request-serving services (proxy, object, container and account
servers, with their workers below them); the background daemons (replicators, auditors,
updaters: `<node>-<kind>-daemons`) and the supervisor are left out of the per-request CPU
figure, as the Swift reference runs no daemons; `daemon_pids` lets a caller report them, and
`paused_daemons` stops them (SIGSTOP) while a benchmark measures, so both systems serve the
workloads with the same set of processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ports import free_ports
from bench.procstat import tree_pids

__all__ = [
    "ADMIN_KEY",
    "ADMIN_USER",
    "CairnCluster",
    "CairnRefError",
    "paused_daemons",
    "running_cairn",
    "service_pids",
]

ROOT = Path(__file__).resolve().parent.parent
ADMIN_USER = "admin:admin"
ADMIN_KEY = "adminkey"
_UP_TIMEOUT_S = 180.0
_DOWN_TIMEOUT_S = 60.0


class CairnRefError(RuntimeError):
    pass


@dataclass(frozen=True)
class CairnCluster:
    data_dir: Path
    proxy_port: int
    supervisor_pid: int
    server_pids: tuple[int, ...]
    daemon_pids: tuple[int, ...]

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/auth/v1.0"


def service_pids(state: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(servers, daemons) from `cairn up`'s state.json (pure)."""
    servers: list[int] = []
    daemons: list[int] = []
    for svc in state.get("services", []):
        if not isinstance(svc, dict) or not isinstance(svc.get("pid"), int):
            continue
        (daemons if str(svc.get("name", "")).endswith("-daemons") else servers).append(svc["pid"])
    return tuple(servers), tuple(daemons)


def _cairn(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def deployment_doc(proxy_workers: int) -> dict[str, Any]:
    from tools.deployment import default_config

    doc = default_config(admin_key=ADMIN_KEY, ports=free_ports(10), proxy_workers=proxy_workers)
    doc["block"]["enabled"] = False
    return doc


def _kill_tree(pid: int) -> None:
    for p in tree_pids([pid]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@contextlib.contextmanager
def running_cairn(base: Path, proxy_workers: int) -> Iterator[CairnCluster]:
    from tools.deployment import config_text

    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    data_dir = base / "data"
    doc = deployment_doc(proxy_workers)
    conf = base / "cairn.toml"
    conf.write_text(config_text(doc))
    up = _cairn(
        "up", "--config", str(conf), "--data-dir", str(data_dir), "-d", timeout_s=_UP_TIMEOUT_S
    )
    state = _state(data_dir)
    sup_pid = state.get("supervisor_pid") if state else None
    try:
        if up.returncode != 0 or not isinstance(sup_pid, int):
            raise CairnRefError(
                f"cairn up failed ({up.returncode}): {(up.stdout + up.stderr).strip()[-1500:]}"
            )
        servers, daemons = service_pids(state or {})
        yield CairnCluster(data_dir, int(doc["proxy"]["port"]), sup_pid, servers, daemons)
    finally:
        try:
            stopped = _cairn("down", "--data-dir", str(data_dir), timeout_s=_DOWN_TIMEOUT_S)
            clean = stopped.returncode == 0
        except subprocess.TimeoutExpired:
            clean = False  # `cairn down` hung: its processes are killed below
        if isinstance(sup_pid, int) and (not clean or _alive(sup_pid)):
            _kill_tree(sup_pid)


def _state(data_dir: Path) -> dict[str, Any] | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = json.loads((data_dir / "run" / "state.json").read_text())
            if isinstance(state, dict) and isinstance(state.get("supervisor_pid"), int):
                return state
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def paused_daemons(roots: tuple[int, ...]) -> Iterator[None]:
    """SIGSTOP the background daemons (replicators, auditors, updaters) and their children for
    the block, SIGCONT after it.

    Left running, a replicator pass sends every partition's REPLICATE to the object servers and
    an auditor reads bodies: CPU in the request-serving processes and on the shared cores
    during a measurement, which the Swift reference (no daemons) does not pay.
    """
    pids = sorted(tree_pids(roots))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
