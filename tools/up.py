"""`cairn up`, `cairn down`, `cairn status`: run the platform on this machine."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.deploy import DeploymentConfig, load_deployment
from tools.deployment import (
    CONFIG_NAME,
    ServiceSpec,
    build_rings,
    load_or_create,
    make_device_dirs,
    select_specs,
    service_specs,
)
from tools.supervisor import FRONT_GROUPS, Supervisor, read_state, read_states

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


def selection_tag(only: list[str] | None, host: str | None) -> str:
    """The state-file tag of a `--only/--host` supervisor ("" for the whole deployment)."""
    parts = [*(only or []), *([host] if host else [])]
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in parts)


def prepare(
    data_dir: Path,
    config: Path | None,
    quiet: bool = False,
    *,
    only: list[str] | None = None,
    host: str | None = None,
) -> Supervisor:
    cfg = load_or_create(data_dir, config)
    make_device_dirs(cfg)
    build_rings(cfg, progress=not quiet)
    config_path = _config_path(data_dir, config)
    specs = select_specs(service_specs(cfg, config_path), only, host)
    sup = Supervisor(data_dir, specs)
    sup.endpoints = endpoints(cfg)
    sup.credentials = credentials(cfg)
    sup.config_path = str(config_path)
    sup.tag = selection_tag(only, host)
    return sup


def _healthy(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=timeout_s) as r:  # noqa: S310
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def service_healthy(s: dict[str, object]) -> bool:
    """An HTTP service answers its health check; a background daemon's process lives."""
    url = s.get("url")
    if url:
        return _healthy(str(url))
    return _pid_alive(s.get("pid"))


def _ready(s: dict[str, object]) -> bool:
    """Ready for `cairn up`: held, or healthy; background daemons (no URL) start a moment
    after the servers and do not hold up start-up."""
    return bool(s.get("held") or not s.get("url") or service_healthy(s))


def _wait_ready(
    data_dir: Path, tag: str = "", timeout_s: float = _READY_TIMEOUT_S
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(data_dir, tag)
        services = state.get("services") if state else None
        if (
            isinstance(services, list)
            and services
            and all(isinstance(s, dict) and _ready(s) for s in services)
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


def ports_in_use(specs: list[ServiceSpec]) -> list[str]:
    """The configured listen addresses something else already holds ("name host:port").

    A stale deployment still listening would otherwise answer the new one's health checks.
    Only EADDRINUSE counts: an address this host does not have (another host's part of a
    multi-host deployment) is not ours to check."""
    busy = []
    for spec in specs:
        for host, port in spec.binds:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
                try:
                    s.bind((host, port))
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        busy.append(f"{spec.name} {host}:{port}")
    return busy


def _refuse_busy_ports(sup: Supervisor) -> None:
    busy = ports_in_use(sup.specs)
    if busy:
        raise SystemExit(
            "cairn: configured ports already in use (another deployment or program is "
            "listening): " + ", ".join(busy)
        )


def cmd_up(
    data_dir: Path,
    config: Path | None,
    detach: bool,
    only: list[str] | None = None,
    host: str | None = None,
) -> int:
    data_dir = data_dir.resolve()
    tag = selection_tag(only, host)
    state = read_state(data_dir, tag)
    if state and _pid_alive(state.get("supervisor_pid")):
        print(f"cairn: already running (supervisor pid {state['supervisor_pid']})", file=sys.stderr)
        _print_ready(state, data_dir)
        return 0
    if detach:
        # builds config and rings and checks the selection, reporting errors here
        _refuse_busy_ports(prepare(data_dir, config, only=only, host=host))
        argv = [sys.executable, "-m", "tools.supervisor", "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config.resolve())]
        for o in only or []:
            argv += ["--only", o]
        if host:
            argv += ["--host", host]
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        log_name = f"supervisor-{tag}.log" if tag else "supervisor.log"
        with open(data_dir / "logs" / log_name, "ab") as log:
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _print_ready(_wait_ready(data_dir, tag), data_dir)
        return 0
    sup = prepare(data_dir, config, only=only, host=host)
    _refuse_busy_ports(sup)
    sup.start_all()
    try:
        _print_ready(_wait_ready(data_dir, tag), data_dir)
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


def _live_states(data_dir: Path) -> list[dict[str, object]]:
    return [st for st in read_states(data_dir) if _pid_alive(st.get("supervisor_pid"))]


def cmd_down(data_dir: Path) -> int:
    """Stop every supervisor of the data dir (the whole deployment and any `--only` ones)."""
    data_dir = data_dir.resolve()
    live = _live_states(data_dir)
    if not live:
        print("cairn: not running", file=sys.stderr)
        for path in (data_dir / "run").glob("state*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return 0
    # Supervisors that run only clients of the storage nodes (an `--only blockd` one, say)
    # stop first, so blockd's last flush still finds the object servers; each supervisor
    # orders its own children the same way.
    front = [st for st in live if _front_only(st)]
    stuck: list[int] = []
    for stage in (front, [st for st in live if not _front_only(st)]):
        pids = [p for st in stage if isinstance(p := st.get("supervisor_pid"), int)]
        stuck += _stop_supervisors(pids)
    if stuck:
        print(f"cairn: supervisor(s) {stuck} did not stop in 30s", file=sys.stderr)
        return 1
    print("cairn: stopped")
    return 0


def _front_only(state: dict[str, object]) -> bool:
    services = state.get("services")
    if not isinstance(services, list) or not services:
        return False
    return all(isinstance(s, dict) and s.get("group") in FRONT_GROUPS for s in services)


def _stop_supervisors(pids: list[int]) -> list[int]:
    """SIGTERM the supervisors and wait up to 30 s; the ones still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _pid_alive(p)]


def _status_config(data_dir: Path, states: list[dict[str, object]]) -> DeploymentConfig | None:
    paths = [str(st["config"]) for st in states if st.get("config")]
    paths.append(str(data_dir / CONFIG_NAME))
    for p in paths:
        if Path(p).exists():
            with contextlib.suppress(Exception):
                return load_deployment(p, data_dir=data_dir)
    return None


def status_doc(data_dir: Path) -> dict[str, object]:
    """What `cairn status --json` prints."""
    from tools.recon import node_summaries

    data_dir = data_dir.resolve()
    live = _live_states(data_dir)
    services = []
    for state in live:
        raw = state.get("services", [])
        assert isinstance(raw, list)
        for s in raw:
            services.append(
                {
                    "name": s["name"],
                    "url": s["url"],
                    "pid": s["pid"],
                    "healthy": service_healthy(s),
                    "restarts": s.get("restarts", 0),
                    # the hold file is the truth; the supervisor's state file may lag it
                    "held": (data_dir / "run" / "hold" / str(s["name"])).exists(),
                    "starting": bool(s.get("starting", False)),
                }
            )
    cfg = _status_config(data_dir, live) if live else None
    eps: object = live[0].get("endpoints", {}) if live else {}
    return {
        "running": bool(live),
        "data_dir": str(data_dir),
        "endpoints": eps,
        "services": services,
        "nodes": node_summaries(cfg) if cfg is not None else [],
    }


def cmd_status(data_dir: Path, as_json: bool) -> int:
    from tools.recon import format_node

    out = status_doc(data_dir)
    services = out["services"]
    assert isinstance(services, list)
    running = bool(out["running"])
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        if not running:
            print(f"cairn: not running (data dir {out['data_dir']})")
        for s in services:
            mark = "ok  " if s["healthy"] else ("held" if s["held"] else "DOWN")
            if not s["healthy"] and not s["held"] and s["starting"]:
                mark = "wait"
            url = s["url"] or "(background daemon)"
            print(f"  {mark} {s['name']:<24} pid {s['pid']!s:<8} {url}")
        eps = out["endpoints"]
        assert isinstance(eps, dict)
        for k, v in eps.items():
            print(f"  {k:<7} {v}")
        nodes = out["nodes"]
        assert isinstance(nodes, list)
        for n in nodes:
            print(format_node(n))
    up = all(s["healthy"] or s["held"] or s["starting"] for s in services)
    return 0 if running and up else 3
