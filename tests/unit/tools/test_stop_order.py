"""The supervisor stops blockd and the proxy before the storage servers they write to."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tools.deployment import ServiceSpec
from tools.supervisor import Supervisor

# A child that notes when SIGTERM arrived, takes `linger` seconds to finish (blockd flushing
# its cache), then notes that it has exited.
_CHILD = """
import signal, sys, time
log, name, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
def note(what):
    with open(log, "a") as f:
        f.write(f"{time.monotonic():.6f} {name} {what}\\n")
def on_term(*_):
    note("term")
    time.sleep(linger)
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("up")
while True:
    time.sleep(0.05)
"""


def _spec(log: Path, name: str, group: str, linger_s: float) -> ServiceSpec:
    argv = [sys.executable, "-c", _CHILD, str(log), name, str(linger_s)]
    return ServiceSpec(name, argv, url=f"http://127.0.0.1:1/{name}", group=group)


def test_front_services_have_exited_before_storage_servers_get_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "events"
    specs = [  # storage first, as service_specs lists them
        _spec(log, "node1-object", "node1", 0.0),
        _spec(log, "node1-container", "node1", 0.0),
        _spec(log, "proxy", "proxy", 0.1),
        _spec(log, "blockd", "blockd", 0.5),
    ]
    sup = Supervisor(tmp_path / "data", specs)
    sup.start_all()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(" up") == len(specs):
            break
        time.sleep(0.05)
    sup.stop_all()
    events = [line.split()[1:] for line in log.read_text().splitlines()]
    order = [f"{name} {what}" for name, what in events if what != "up"]
    front_exits = [order.index("blockd exit"), order.index("proxy exit")]
    storage_terms = [order.index("node1-object term"), order.index("node1-container term")]
    assert max(front_exits) < min(storage_terms), order
