"""OpenStack Swift all-in-one as the reference, installed and run entirely under one directory.

Layout under `base` (default ./bench-out/swift):
    etc/        swift.conf, proxy-server.conf, node{1,2}/{object,container,account}-server.conf,
                *.builder and *.ring.gz (swift-ring-builder)
    srv/node1/{d1,d2}  srv/node2/{d3,d4}   devices as plain directories (mount_check = false)
    logs/       stdout/stderr of every process

Swift reads /etc/swift/swift.conf unless a server's config sets `swift_dir`: every generated
config sets `swift_dir = <base>/etc` (the servers call `set_swift_dir` before validating the
hash prefix/suffix and loading policies), and `swift-ring-builder` takes file paths, so
nothing is written to /etc/swift.

Shape, matching the cairn all-in-one: two "nodes", each one object, one container and one
account server on its own ports with two devices, 3 replicas over the 4 devices in 2 zones,
part power 10. As Swift's deployment guide recommends for a box this size: proxy workers =
cores, one worker per storage server (2 nodes x 1 object worker = the 2 cores), tempauth,
memcached (started here on a loopback port). fsync is Swift's default (on). Logs go to
syslog over UDP on loopback, as Swift does when /dev/log is absent; the background daemons
(replicators, auditors, updaters) are not started, for cairn runs none during a benchmark.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SwiftLayout",
    "SwiftProcesses",
    "SwiftRefError",
    "ensure_swift",
    "render_configs",
    "ring_commands",
    "running_swift",
    "venv_matches_interpreter",
]

SWIFT_PIP_SPEC = "swift"
KINDS = ("object", "container", "account")
_READY_TIMEOUT_S = 60.0
_STOP_GRACE_S = 10.0
_PIP_TIMEOUT_S = 900.0
PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl "
    "ratelimit tempauth copy container-quotas account-quotas slo dlo versioned_writes symlink "
    "proxy-logging proxy-server"
)
# Every filter of the pipeline except tempauth (configured on its own) gets a plain section.
_PROXY_FILTERS = sorted(set(PROXY_PIPELINE.split()) - {"tempauth", "proxy-server"})


class SwiftRefError(RuntimeError):
    pass


@dataclass(frozen=True)
class SwiftLayout:
    """Everything the generated configs depend on (pure data; see `render_configs`)."""

    base: Path
    proxy_port: int
    node_ports: tuple[tuple[int, int, int], ...]  # per node: (object, container, account)
    memcached_port: int
    proxy_workers: int = 2
    storage_workers: int = 1
    replicas: int = 3
    part_power: int = 10
    devices_per_node: int = 2
    user: str = "admin"
    account: str = "admin"
    key: str = "adminkey"
    run_as: str = field(default_factory=lambda: pwd.getpwuid(os.getuid()).pw_name)
    hash_prefix: str = field(default_factory=lambda: secrets.token_hex(8))
    hash_suffix: str = field(default_factory=lambda: secrets.token_hex(8))
    syslog_port: int = 514

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    def node_dir(self, i: int) -> Path:
        return self.base / "srv" / f"node{i + 1}"

    def devices(self, i: int) -> list[str]:
        first = i * self.devices_per_node + 1
        return [f"d{first + j}" for j in range(self.devices_per_node)]

    def conf_path(self, i: int, kind: str) -> Path:
        return self.etc / f"node{i + 1}" / f"{kind}-server.conf"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def auth_url(self) -> str:
        return f"{self.proxy_url}/auth/v1.0"


def _defaults(lay: SwiftLayout, port: int, workers: int, log_name: str) -> str:
    return (
        "[DEFAULT]\n"
        "bind_ip = 127.0.0.1\n"
        f"bind_port = {port}\n"
        f"workers = {workers}\n"
        f"swift_dir = {lay.etc}\n"
        f"user = {lay.run_as}\n"
        f"log_name = {log_name}\n"
        "log_udp_host = 127.0.0.1\n"
        f"log_udp_port = {lay.syslog_port}\n"
        "log_level = INFO\n"
    )


def _storage_conf(lay: SwiftLayout, i: int, kind: str) -> str:
    port = lay.node_ports[i][KINDS.index(kind)]
    return (
        _defaults(lay, port, lay.storage_workers, f"{kind}-server-{i + 1}")
        + f"devices = {lay.node_dir(i)}\n"
        "mount_check = false\n"
        "\n[pipeline:main]\n"
        f"pipeline = healthcheck {kind}-server\n"
        "\n[filter:healthcheck]\n"
        "use = egg:swift#healthcheck\n"
        f"\n[app:{kind}-server]\n"
        f"use = egg:swift#{kind}\n"
    )


def _proxy_conf(lay: SwiftLayout) -> str:
    parts = [
        _defaults(lay, lay.proxy_port, lay.proxy_workers, "proxy-server"),
        f"\n[pipeline:main]\npipeline = {PROXY_PIPELINE}\n",
        "\n[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n",
        "\n[filter:tempauth]\nuse = egg:swift#tempauth\n"
        f"user_{lay.account}_{lay.user} = {lay.key} .admin .reseller_admin\n",
    ]
    for name in _PROXY_FILTERS:
        egg = name.replace("-", "_")
        extra = f"memcache_servers = 127.0.0.1:{lay.memcached_port}\n" if name == "cache" else ""
        egg = {"cache": "memcache"}.get(name, egg)
        parts.append(f"\n[filter:{name}]\nuse = egg:swift#{egg}\n{extra}")
    return "".join(parts)


def _swift_conf(lay: SwiftLayout) -> str:
    return (
        "[swift-hash]\n"
        f"swift_hash_path_prefix = {lay.hash_prefix}\n"
        f"swift_hash_path_suffix = {lay.hash_suffix}\n"
        "\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )


def render_configs(lay: SwiftLayout) -> dict[Path, str]:
    """Every config file of the reference, by path (pure: nothing is written)."""
    out = {
        lay.etc / "swift.conf": _swift_conf(lay),
        lay.etc / "proxy-server.conf": _proxy_conf(lay),
    }
    for i in range(len(lay.node_ports)):
        for kind in KINDS:
            out[lay.conf_path(i, kind)] = _storage_conf(lay, i, kind)
    return out


def ring_commands(lay: SwiftLayout, builder_exe: str) -> list[list[list[str]]]:
    """Per ring, the swift-ring-builder invocations that build it, in order (pure).

    One `add` takes all devices (swift-ring-builder accepts several <dev> <weight> pairs),
    so a ring is three runs of the tool; the three rings are independent of each other.
    """
    rings = []
    for kind in KINDS:
        builder = str(lay.etc / f"{kind}.builder")
        adds: list[str] = []
        for i, ports in enumerate(lay.node_ports):
            port = ports[KINDS.index(kind)]
            for dev in lay.devices(i):
                adds += [f"r1z{i + 1}-127.0.0.1:{port}/{dev}", "100"]
        rings.append([
            [builder_exe, builder, "create", str(lay.part_power), str(lay.replicas), "1"],
            [builder_exe, builder, "add", *adds],
            [builder_exe, builder, "rebalance"],
        ])  # fmt: skip
    return rings


def venv_matches_interpreter(venv: Path, base_executable: str | None = None) -> bool:
    """Whether the venv at `venv` was made from the interpreter running this (its pyvenv.cfg
    ``home`` is the directory of our base executable), so that Swift and cairn run on the
    same Python build."""
    try:
        text = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return False
    home = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            home = value.strip()
    if home is None:
        return False
    if base_executable is None:
        base_executable = str(getattr(sys, "_base_executable", sys.executable))
    return Path(home).resolve() == Path(base_executable).parent.resolve()


def ensure_swift(venv: Path, log: Path | None = None) -> Path:
    """A venv with Swift from PyPI (created on first use); returns its bin directory."""
    bindir = venv / "bin"
    installed = (bindir / "swift-proxy-server").exists() and (
        bindir / "swift-ring-builder"
    ).exists()
    if installed and venv_matches_interpreter(venv):
        return bindir
    if installed:
        # Made from another interpreter than this run's: the two systems would not be
        # measured on the same Python build (a PGO build runs pure Python ~1.6x faster).
        print(f"re-creating {venv}: it was made from another Python", file=sys.stderr)
        shutil.rmtree(venv)
    print(f"installing OpenStack Swift from PyPI into {venv} ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        proc = subprocess.run(
            [str(bindir / "pip"), "install", "-q", SWIFT_PIP_SPEC],
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise SwiftRefError(f"could not create the Swift venv at {venv}: {e}") from None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (bindir / "swift-proxy-server").exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SwiftRefError(
            "pip install swift failed (pyeclib needs liberasurecode-dev, xattr needs libffi;"
            f" apt-get install liberasurecode-dev libffi-dev):\n{tail}"
        )
    return bindir


def _write_layout(lay: SwiftLayout) -> None:
    for i in range(len(lay.node_ports)):
        for dev in lay.devices(i):
            (lay.node_dir(i) / dev).mkdir(parents=True, exist_ok=True)
    for path, text in render_configs(lay).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (lay.base / "logs").mkdir(parents=True, exist_ok=True)


def _build_ring(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode not in (0, 1):  # 1 = finished with warnings
            raise SwiftRefError(f"{' '.join(cmd[1:])} failed: {proc.stdout}{proc.stderr}")


def _build_rings(lay: SwiftLayout, bindir: Path) -> None:
    rings = ring_commands(lay, str(bindir / "swift-ring-builder"))
    with ThreadPoolExecutor(max_workers=len(rings)) as pool:
        for f in [pool.submit(_build_ring, cmds) for cmds in rings]:
            f.result()


@dataclass
class SwiftProcesses:
    """The running reference: its layout and the pid of every process it started."""

    layout: SwiftLayout
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def start(self, name: str, argv: list[str]) -> None:
        logf = open(self.layout.base / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        with logf:
            # Own session: one killpg stops a server with all its forked workers.
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # stragglers and orphaned workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=1.0) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_ready(sp: SwiftProcesses, urls: list[str]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        dead = [n for n, p in sp.procs.items() if p.poll() is not None]
        if dead:
            raise SwiftRefError(
                f"Swift process(es) exited at start: {dead}; see {sp.layout.base}/logs"
            )
        pending = [u for u in pending if not _healthy(u)]
        time.sleep(0.2)
    if pending:
        raise SwiftRefError(f"Swift not healthy after {_READY_TIMEOUT_S:.0f}s: {pending}")


@contextlib.contextmanager
def running_swift(lay: SwiftLayout, bindir: Path, fresh: bool = True) -> Iterator[SwiftProcesses]:
    """Write configs, build rings, start memcached and every server; stop them all on exit."""
    if fresh and lay.base.exists():
        shutil.rmtree(lay.base)
    _write_layout(lay)
    _build_rings(lay, bindir)
    sp = SwiftProcesses(lay)
    try:
        memcached = shutil.which("memcached")
        if memcached is None:
            raise SwiftRefError("memcached is not installed (apt-get install memcached)")
        sp.start(
            "memcached",
            [
                memcached,
                "-l",
                "127.0.0.1",
                "-p",
                str(lay.memcached_port),
                "-U",
                "0",
                "-m",
                "64",
                "-u",
                lay.run_as,
            ],
        )
        urls = [lay.proxy_url]
        for i, ports in enumerate(lay.node_ports):
            for kind, port in zip(KINDS, ports, strict=True):
                exe = str(bindir / f"swift-{kind}-server")
                sp.start(f"node{i + 1}-{kind}", [exe, str(lay.conf_path(i, kind))])
                urls.append(f"http://127.0.0.1:{port}")
        sp.start("proxy", [str(bindir / "swift-proxy-server"), str(lay.etc / "proxy-server.conf")])
        _wait_ready(sp, urls)
        yield sp
    finally:
        sp.stop()
