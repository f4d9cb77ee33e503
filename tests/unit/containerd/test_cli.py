"""`python -m containerd.server` / `python -m accountd.server` as real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tomli_w

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    doc = {
        "version": 1,
        "cluster": {"hash_path_prefix": "p", "hash_path_suffix": "s"},
        "nodes": [
            {
                "name": "n1",
                "container_port": port,
                "account_port": port,
                "devices": [{"name": "sda"}],
                "devices_dir": str(tmp_path / "devs"),
            }
        ],
        "log": {"level": "WARNING"},
    }
    (tmp_path / "devs" / "sda").mkdir(parents=True)
    path = tmp_path / "cairn.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            with urllib.request.urlopen(url + "/healthcheck", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("server never became healthy")


@pytest.mark.parametrize(
    ("module", "path"), [("containerd.server", "/sda/1/a/c"), ("accountd.server", "/sda/1/a")]
)
def test_server_runs_serves_and_stops_on_sigterm(tmp_path: Path, module: str, path: str) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config), "--node", "n1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        req = urllib.request.Request(url + path, method="PUT", headers={"X-Timestamp": "1.0"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize("module", ["containerd.server", "accountd.server"])
def test_bad_config_exits_with_a_message(tmp_path: Path, module: str) -> None:
    config = write_config(tmp_path, free_port())
    out = subprocess.run(
        [sys.executable, "-m", module, "--config", str(config), "--node", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "nope" in out.stderr
