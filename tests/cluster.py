"""Start a real cairn cluster the `cairn up` way, for integration and fault tests.

The cluster runs as real processes (supervisor, proxy, object/container/account servers) on
free loopback ports, with its data in a temporary directory; it is stopped with `cairn down`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tools.deployment import config_text, default_config

ROOT = Path(__file__).resolve().parent.parent
CAIRN = [sys.executable, "-m", "tools.cli"]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def run_cairn(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAIRN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=check
    )


@dataclass
class Cluster:
    data_dir: Path
    config_path: Path
    doc: dict[str, Any]
    key: str
    user: str = "admin:admin"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.doc['proxy']['port']}"

    @property
    def auth_url(self) -> str:
        return f"{self.proxy_url}/auth/v1.0"

    def connection(self, user: str | None = None, key: str | None = None, **kw: Any):
        import swiftclient

        return swiftclient.Connection(
            authurl=self.auth_url,
            user=user or self.user,
            key=key or self.key,
            retries=0,
            timeout=30,
            **kw,
        )

    def status(self) -> dict[str, Any]:
        out = run_cairn("status", "--data-dir", str(self.data_dir), "--json", check=False)
        status: dict[str, Any] = json.loads(out.stdout)
        return status

    def service_pid(self, name: str) -> int:
        for s in self.status()["services"]:
            if s["name"] == name:
                return int(s["pid"])
        raise KeyError(name)

    def hold(self, name: str) -> None:
        (self.data_dir / "run" / "hold" / name).touch()

    def release(self, name: str) -> None:
        (self.data_dir / "run" / "hold" / name).unlink(missing_ok=True)

    def kill9(self, name: str) -> None:
        os.kill(self.service_pid(name), signal.SIGKILL)

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.status()
            if st["running"] and all(s["healthy"] or s["held"] for s in st["services"]):
                return
            time.sleep(0.3)
        raise AssertionError(f"cluster not healthy: {self.status()}")

    def stop(self) -> None:
        run_cairn("down", "--data-dir", str(self.data_dir), check=False)


def start_cluster(
    base: Path,
    *,
    users: list[dict[str, Any]] | None = None,
    proxy_workers: int = 1,
    tweak: Any = None,
) -> Cluster:
    data_dir = base / "cairn-data"
    key = "adminkey"
    doc = default_config(admin_key=key, ports=free_ports(10), proxy_workers=proxy_workers)
    doc["block"]["enabled"] = False
    if users:
        doc["tempauth"]["users"].extend(users)
    doc["log"] = {"format": "json", "level": "INFO"}
    if tweak is not None:
        tweak(doc)
    config_path = base / "cairn.toml"
    config_path.write_text(config_text(doc))
    out = run_cairn(
        "up", "--config", str(config_path), "--data-dir", str(data_dir), "-d", check=False
    )
    cluster = Cluster(data_dir, config_path, doc, key)
    if out.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}"
            for p in sorted((data_dir / "logs").glob("*.log"))
        )
        cluster.stop()
        raise AssertionError(f"cairn up failed: {out.stdout}\n{out.stderr}\n{logs}")
    return cluster


def http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:  # its response holds the socket: close it now, not at garbage collection
            return e.code, dict(e.headers), e.read()


__all__ = ["Cluster", "free_ports", "http", "run_cairn", "start_cluster", "tomli_w"]
