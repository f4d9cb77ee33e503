"""`cairn up`, `cairn down`, `cairn status`: run the platform on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.deploy import DeploymentConfig
from tools.deployment import (
    CONFIG_NAME,
    build_rings,
    load_or_create,
    make_device_dirs,
    service_specs,
)
from tools.supervisor import Supervisor, read_state, state_path

__all__ = ["cmd_down", "cmd_status", "cmd_up", "prepare"]

_READY_TIMEOUT_S = 90.0


def _config_path(data_dir: Path, config: Path | None) -> Path:
    return config.resolve() if config is not None else data_dir / CONFIG_NAME


def endpoints(cfg: DeploymentConfig) -> dict[str, str]:
    p = cfg.proxy
    base = p.public_url.rstrip("/") if p.public_url else f"http://{p.host}:{p.port}"
    out = {"swift": f"{base}/v1/", "auth": f"{base}/auth/v1.0", "s3": base}
    if cfg.block.enabled:
        out["volume"] = f"http://{cfg.block.host}:{cfg.block.api_port}/v3"
        out["iscsi"] = f"{cfg.block.host}:{cfg.block.iscsi_port}"
    return out


def credentials(cfg: DeploymentConfig) -> dict[str, str]:
    """The first admin user: printed so a new user can start straight away."""
    for u in cfg.tempauth.users:
        if u.admin:
            return {
                "user": f"{u.account}:{u.user}",
                "key": u.key,
                "s3_access_key": f"{u.account}:{u.user}",
                "s3_secret_key": u.key,
            }
    return {}


def prepare(data_dir: Path, config: Path | None, quiet: bool = False) -> Supervisor:
    cfg = load_or_create(data_dir, config)
    make_device_dirs(cfg)
    build_rings(cfg, progress=not quiet)
    sup = Supervisor(data_dir, service_specs(cfg, _config_path(data_dir, config)))
    sup.endpoints = endpoints(cfg)
    sup.credentials = credentials(cfg)
    return sup


def _healthy(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=timeout_s) as r:  # noqa: S310
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_ready(data_dir: Path, timeout_s: float = _READY_TIMEOUT_S) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(data_dir)
        services = state.get("services") if state else None
        if (
            isinstance(services, list)
            and services
            and all(
                isinstance(s, dict) and (s.get("held") or _healthy(str(s["url"]))) for s in services
            )
        ):
            assert state is not None
            return state
        time.sleep(0.3)
    raise SystemExit(
        f"cairn: services did not become healthy within {timeout_s:.0f}s; see {data_dir / 'logs'}"
    )


def _print_ready(state: dict[str, object], data_dir: Path) -> None:
    ep = state.get("endpoints", {})
    cred = state.get("credentials", {})
    assert isinstance(ep, dict) and isinstance(cred, dict)
    print(f"cairn is up (data in {data_dir})")
    for k, v in ep.items():
        print(f"  {k:<7} {v}")
    if cred:
        print(f"  user    {cred['user']}   key {cred['key']}")
        print(f"  try:    swift -A {ep.get('auth')} -U {cred['user']} -K {cred['key']} stat")
        print(f"  S3:     access key {cred['s3_access_key']}  secret {cred['s3_secret_key']}")


def cmd_up(data_dir: Path, config: Path | None, detach: bool) -> int:
    data_dir = data_dir.resolve()
    state = read_state(data_dir)
    if state and _pid_alive(state.get("supervisor_pid")):
        print(f"cairn: already running (supervisor pid {state['supervisor_pid']})", file=sys.stderr)
        _print_ready(state, data_dir)
        return 0
    if detach:
        prepare(data_dir, config)  # builds config and rings, reporting errors here
        argv = [sys.executable, "-m", "tools.supervisor", "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config.resolve())]
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        with open(data_dir / "logs" / "supervisor.log", "ab") as log:
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _print_ready(_wait_ready(data_dir), data_dir)
        return 0
    sup = prepare(data_dir, config)
    sup.start_all()
    try:
        _print_ready(_wait_ready(data_dir), data_dir)
        print("press Ctrl-C to stop")
    except SystemExit:
        sup.stop_all()
        raise
    sup.run_forever()
    return 0


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_down(data_dir: Path) -> int:
    data_dir = data_dir.resolve()
    state = read_state(data_dir)
    if not state or not _pid_alive(state.get("supervisor_pid")):
        print("cairn: not running", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            state_path(data_dir).unlink()
        return 0
    pid = state["supervisor_pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        print(f"cairn: supervisor {pid} did not stop in 30s", file=sys.stderr)
        return 1
    print("cairn: stopped")
    return 0


def cmd_status(data_dir: Path, as_json: bool) -> int:
    data_dir = data_dir.resolve()
    state = read_state(data_dir)
    running = bool(state and _pid_alive(state.get("supervisor_pid")))
    services = []
    if state and running:
        raw = state.get("services", [])
        assert isinstance(raw, list)
        for s in raw:
            services.append(
                {
                    "name": s["name"],
                    "url": s["url"],
                    "pid": s["pid"],
                    "healthy": _healthy(s["url"]),
                    "restarts": s.get("restarts", 0),
                    "held": s.get("held", False),
                }
            )
    out = {
        "running": running,
        "data_dir": str(data_dir),
        "endpoints": (state or {}).get("endpoints", {}) if running else {},
        "services": services,
    }
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        if not running:
            print(f"cairn: not running (data dir {data_dir})")
        for s in services:
            mark = "ok  " if s["healthy"] else ("held" if s["held"] else "DOWN")
            print(f"  {mark} {s['name']:<18} pid {s['pid']!s:<8} {s['url']}")
        eps = out["endpoints"]
        assert isinstance(eps, dict)
        for k, v in eps.items():
            print(f"  {k:<7} {v}")
    return 0 if running and all(s["healthy"] or s["held"] for s in services) else 3
