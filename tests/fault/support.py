"""Shared pieces of the fault tests: daemon passes, replica checks, load generators."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.deploy import DeploymentConfig
from tests.cluster import ROOT, Cluster
from tools.locate import load_cfg
from tools.nodes import check_item, open_ring

NODE_SERVICES = ("object", "container", "account")
DAEMON_MODULES = {
    "object": "objectd.daemons",
    "container": "containerd.daemons",
    "account": "accountd.daemons",
}
_PASS_TIMEOUT_S = 240.0


def quiet_daemons(doc: dict[str, Any], part_power: int = 8) -> None:
    """A `start_cluster` tweak for fault tests: a small ring (short passes) and background
    daemons that pass once at start and then wait, so the explicit `--once` passes the tests
    run (and judge) are not competing with periodic ones for the two CPUs."""
    doc["cluster"]["part_power"] = part_power
    long_s = 3600.0
    doc["object_daemons"] = {
        "replicator_interval_s": long_s,
        "auditor_interval_s": long_s,
        "updater_interval_s": long_s,
        "expirer_interval_s": long_s,
    }
    doc["container_daemons"] = {"replicator_interval_s": long_s, "updater_interval_s": long_s}
    doc["account_daemons"] = {"replicator_interval_s": long_s}


def require_daemons(*kinds: str) -> None:
    """Skip (saying why) when a replication daemon package is not installed in this tree."""
    for kind in kinds:
        mod = DAEMON_MODULES[kind]
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not in this tree yet; the fault test needs its daemons")


def cfg_of(cluster: Cluster) -> DeploymentConfig:
    return load_cfg(cluster.data_dir)


def node_names(cluster: Cluster) -> list[str]:
    return [n["name"] for n in cluster.doc["nodes"]]


def node_down(cluster: Cluster, node: str) -> None:
    """kill -9 every server and daemon of a node and keep them down (hold files).

    One status read gives every pid, so the node's processes die together (a `cairn status`
    per kill would spread the kills over seconds)."""
    services = [s for s in cluster.status()["services"] if s["name"].startswith(f"{node}-")]
    for s in services:
        cluster.hold(s["name"])
    for s in services:
        # already dead: pid None (TypeError) or gone (ProcessLookupError)
        with contextlib.suppress(ProcessLookupError, TypeError, ValueError):
            os.kill(int(s["pid"]), signal.SIGKILL)


def node_up(cluster: Cluster, node: str, timeout_s: float = 90) -> None:
    for name in [s["name"] for s in cluster.status()["services"]]:
        if name.startswith(f"{node}-"):
            cluster.release(name)
    cluster.wait_healthy(timeout_s)


def run_pass(
    cluster: Cluster,
    kinds: Iterable[str] = ("object", "container", "account"),
    only: list[str] | None = None,
    nodes: list[str] | None = None,
    netns: dict[str, str] | None = None,
) -> None:
    """One `--once` pass of the given daemon packages on every node (nodes in parallel).

    `only` restricts to some daemons of each package (e.g. ["replicator"]); `netns` maps a
    node to the network namespace its processes must run in.
    """
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    for kind in kinds:
        mod = DAEMON_MODULES[kind]
        for node in nodes or node_names(cluster):
            argv = [sys.executable, "-m", mod, "--config", str(cluster.config_path)]
            argv += ["--data-dir", str(cluster.data_dir), "--node", node, "--once"]
            if only:
                argv += ["--only", ",".join(only)]
            if netns and node in netns:
                argv = ["ip", "netns", "exec", netns[node], *argv]
            procs.append(
                (
                    f"{mod} {node}",
                    subprocess.Popen(
                        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    ),
                )
            )
        # one package at a time: the object pass first, then the listings
        for what, p in procs:
            try:
                out, _ = p.communicate(timeout=_PASS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                raise AssertionError(f"{what} --once did not finish: {out[-3000:]}") from None
            assert p.returncode == 0, f"{what} --once failed ({p.returncode}): {out[-3000:]}"
        procs = []


@dataclass
class Replicas:
    """Where each object's copies are, as seen by direct HEADs on its current primaries."""

    missing: dict[str, list[str]] = field(default_factory=dict)
    wrong: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing and not self.wrong


def check_replicas(
    cluster: Cluster, container: str, objects: dict[str, bytes], account: str = "AUTH_admin"
) -> Replicas:
    """HEAD every object on each of its primaries; wrong = present with another etag."""
    cfg = cfg_of(cluster)
    ring = open_ring(cfg, "object")

    async def run() -> Replicas:
        out = Replicas(total=len(objects))
        sem = asyncio.Semaphore(24)
        async with aiohttp.ClientSession() as s:

            async def one(name: str, body: bytes) -> None:
                part, devs = ring.get_nodes(account, container, name)
                want = hashlib.md5(body).hexdigest()
                async with sem:
                    res = await asyncio.gather(
                        *(check_item(s, d, part, account, container, name) for d in devs)
                    )
                for d, r in zip(devs, res, strict=True):
                    where = f"{d.ip}:{d.port}/{d.device}"
                    if not r["present"]:
                        out.missing.setdefault(name, []).append(where)
                    elif r.get("etag") != want:
                        out.wrong.setdefault(name, []).append(where)

            await asyncio.gather(*(one(k, v) for k, v in objects.items()))
        return out

    return asyncio.run(run())


def device_files(cluster: Cluster, node: str, suffix: str = ".data") -> list[Path]:
    base = cfg_of(cluster).devices_dir(cfg_of(cluster).node(node))
    return sorted(base.glob(f"*/objects/*/*/*/*{suffix}"))


@dataclass
class Load:
    """Background clients: PUT new objects and GET acknowledged ones until stopped.

    Every acknowledged PUT is recorded; every GET compares bytes. Failures are collected,
    never raised in the threads.
    """

    connect: Callable[[], Any]
    container: str
    threads: int = 2
    acked: dict[str, bytes] = field(default_factory=dict)
    put_errors: list[str] = field(default_factory=list)
    get_errors: list[str] = field(default_factory=list)
    wrong_bytes: list[str] = field(default_factory=list)
    gets: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _seq: int = 0

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(120)

    def _next_name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"load-{self._seq:06d}"

    def _run(self, i: int) -> None:
        conn = self.connect()
        turn = 0
        while not self._stop.is_set():
            turn += 1
            if turn % 2:
                name = self._next_name()
                body = os.urandom(512 + (turn * 37) % 3000)
                try:
                    conn.put_object(self.container, name, body)
                except Exception as e:
                    self.put_errors.append(f"{name}: {e}")
                    conn = self.connect()
                    continue
                with self._lock:
                    self.acked[name] = body
            else:
                with self._lock:
                    items = list(self.acked.items())
                if not items:
                    continue
                name, body = items[(turn * 7919 + i) % len(items)]
                try:
                    got = conn.get_object(self.container, name)[1]
                except Exception as e:
                    self.get_errors.append(f"{name}: {e}")
                    conn = self.connect()
                    continue
                self.gets += 1
                if got != body:
                    self.wrong_bytes.append(name)
            time.sleep(0.01)
