"""The Swift reference's generated configs, read back with configparser, and its rings."""

from __future__ import annotations

import configparser
from pathlib import Path

from bench.swiftref import (
    KINDS,
    PROXY_PIPELINE,
    SwiftLayout,
    render_configs,
    ring_commands,
    venv_matches_interpreter,
)


def _layout(base: Path) -> SwiftLayout:
    return SwiftLayout(base=base, proxy_port=8000, node_ports=((6010, 6011, 6012),
                       (6020, 6021, 6022)), memcached_port=11311, proxy_workers=2,
                       run_as="tester", hash_prefix="pre", hash_suffix="suf")  # fmt: skip


def _parse(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


def test_every_file_lives_under_base_and_names_its_swift_dir(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    confs = render_configs(lay)
    assert len(confs) == 2 + 2 * 3
    for path, text in confs.items():
        assert tmp_path in path.parents
        if path.name == "swift.conf":
            continue
        d = _parse(text)["DEFAULT"]
        assert d["swift_dir"] == str(tmp_path / "etc")  # never /etc/swift
        assert d["bind_ip"] == "127.0.0.1"
        assert d["user"] == "tester"
        assert d["log_udp_host"] == "127.0.0.1"


def test_swift_conf_hash_and_policy(tmp_path: Path) -> None:
    cp = _parse(render_configs(_layout(tmp_path))[tmp_path / "etc" / "swift.conf"])
    assert cp["swift-hash"]["swift_hash_path_prefix"] == "pre"
    assert cp["swift-hash"]["swift_hash_path_suffix"] == "suf"
    assert cp["storage-policy:0"]["default"] == "yes"


def test_proxy_conf_workers_tempauth_memcache_and_pipeline(tmp_path: Path) -> None:
    cp = _parse(render_configs(_layout(tmp_path))[tmp_path / "etc" / "proxy-server.conf"])
    assert cp["DEFAULT"]["bind_port"] == "8000"
    assert cp["DEFAULT"]["workers"] == "2"
    pipeline = cp["pipeline:main"]["pipeline"].split()
    assert pipeline == PROXY_PIPELINE.split()
    assert pipeline[-1] == "proxy-server" and "tempauth" in pipeline and "cache" in pipeline
    for name in set(pipeline[:-1]):
        assert cp.has_section(f"filter:{name}"), name
        assert cp[f"filter:{name}"]["use"].startswith("egg:swift#")
    assert cp["filter:cache"]["memcache_servers"] == "127.0.0.1:11311"
    assert cp["filter:cache"]["use"] == "egg:swift#memcache"
    assert cp["filter:proxy-logging"]["use"] == "egg:swift#proxy_logging"
    assert cp["filter:tempauth"]["user_admin_admin"] == "adminkey .admin .reseller_admin"
    assert cp["app:proxy-server"]["account_autocreate"] == "true"


def test_storage_confs_ports_devices_and_mount_check(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    confs = render_configs(lay)
    ports = set()
    for i in range(2):
        for kind in KINDS:
            cp = _parse(confs[lay.conf_path(i, kind)])
            d = cp["DEFAULT"]
            ports.add(int(d["bind_port"]))
            assert d["devices"] == str(tmp_path / "srv" / f"node{i + 1}")
            assert d["mount_check"] == "false"
            assert d["workers"] == "1"
            assert cp[f"app:{kind}-server"]["use"] == f"egg:swift#{kind}"
            assert cp["pipeline:main"]["pipeline"].split() == ["healthcheck", f"{kind}-server"]
    assert ports == {6010, 6011, 6012, 6020, 6021, 6022}


def test_ring_commands_three_replicas_four_devices_two_zones(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    rings = ring_commands(lay, "srb")
    assert [Path(r[0][1]).name for r in rings] == [f"{k}.builder" for k in KINDS]
    for cmds in rings:
        assert [c[2] for c in cmds] == ["create", "add", "rebalance"]
        assert cmds[0][3:] == ["10", "3", "1"]  # part power, replicas, min_part_hours
        assert all(Path(c[1]).parent == tmp_path / "etc" for c in cmds)
    obj_add = rings[KINDS.index("object")][1][3:]
    want = ["r1z1-127.0.0.1:6010/d1", "r1z1-127.0.0.1:6010/d2",
            "r1z2-127.0.0.1:6020/d3", "r1z2-127.0.0.1:6020/d4"]  # fmt: skip
    assert obj_add == [x for dev in want for x in (dev, "100")]
    acc_add = rings[KINDS.index("account")][1][3:]
    assert acc_add[0] == "r1z1-127.0.0.1:6012/d1"


def test_venv_matches_interpreter_compares_home_with_base_executable(tmp_path: Path) -> None:
    venv = tmp_path / "swift-venv"
    venv.mkdir()
    assert not venv_matches_interpreter(venv)  # no pyvenv.cfg: not ours
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert venv_matches_interpreter(venv, base_executable="/usr/bin/python3")
    assert not venv_matches_interpreter(
        venv, base_executable="/root/.pyenv/versions/3.11.7/bin/python3.11"
    )
    (venv / "pyvenv.cfg").write_text("version = 3.11.2\n")  # no home line
    assert not venv_matches_interpreter(venv, base_executable="/usr/bin/python3")
