"""`cairn status` reads the hold files themselves, not the supervisor's (possibly stale) state."""

import json
import os
from pathlib import Path

import pytest

from tools.supervisor import STATE_VERSION, state_path
from tools.up import status_doc


def _write_state(data_dir: Path, held_in_state: bool) -> None:
    (data_dir / "run" / "hold").mkdir(parents=True)
    state = {
        "version": STATE_VERSION,
        "supervisor_pid": os.getpid(),  # a live pid, so the state counts as running
        "data_dir": str(data_dir),
        "config": "",
        "tag": "",
        "endpoints": {},
        "credentials": {},
        "services": [
            {
                "name": "node1-object",
                "url": None,
                "group": "node1",
                "pid": None,
                "restarts": 0,
                "held": held_in_state,
            },
        ],
    }
    state_path(data_dir).write_text(json.dumps(state))


def test_released_service_is_not_reported_held_from_a_stale_state(tmp_path: Path) -> None:
    _write_state(tmp_path, held_in_state=True)  # the supervisor has not caught up yet
    services = status_doc(tmp_path)["services"]
    assert isinstance(services, list) and len(services) == 1
    svc = services[0]
    assert svc["held"] is False
    assert svc["healthy"] is False  # no process yet: callers keep waiting


def test_new_hold_file_is_reported_before_the_supervisor_notices(tmp_path: Path) -> None:
    _write_state(tmp_path, held_in_state=False)
    (tmp_path / "run" / "hold" / "node1-object").touch()
    services = status_doc(tmp_path)["services"]
    assert isinstance(services, list) and len(services) == 1
    svc = services[0]
    assert svc["held"] is True


def test_ports_in_use_names_the_service_and_address() -> None:
    import socket

    from tools.deployment import ServiceSpec
    from tools.up import ports_in_use

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            free = spare.getsockname()[1]
        specs = [
            ServiceSpec("proxy", [], "", "proxy", "127.0.0.1", (("127.0.0.1", port),)),
            ServiceSpec("node1-object", [], "", "node1", "127.0.0.1", (("127.0.0.1", free),)),
            # an address this host does not have is another host's business, not "in use"
            ServiceSpec("node2-object", [], "", "node2", "192.0.2.1", (("192.0.2.1", port),)),
        ]
        assert ports_in_use(specs) == [f"proxy 127.0.0.1:{port}"]


def test_a_daemon_not_started_yet_is_waiting_not_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.up import cmd_status

    _write_state(tmp_path, held_in_state=False)
    state = json.loads(state_path(tmp_path).read_text())
    state["services"][0]["starting"] = True  # the supervisor delays background daemons
    state_path(tmp_path).write_text(json.dumps(state))
    assert cmd_status(tmp_path, as_json=False) == 0
    assert "wait node1-object" in capsys.readouterr().out
    state["services"][0]["starting"] = False  # it ran once and is gone now: down
    state_path(tmp_path).write_text(json.dumps(state))
    assert cmd_status(tmp_path, as_json=False) == 3
    assert "DOWN node1-object" in capsys.readouterr().out
