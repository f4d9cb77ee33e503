"""cairn-ring end to end through main([...]): every verb, --json, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ring import Ring
from ring.builder_file import load_builder
from tools.ring_builder import VERBS, main

VERB_NAMES = sorted(set(VERBS) - {"create"})


@pytest.fixture
def builder(tmp_path: Path) -> str:
    path = str(tmp_path / "object.builder")
    assert main([path, "create", "8", "3", "1"]) == 0
    devs = []
    for z in (1, 2, 3, 4):
        devs += [f"r1z{z}-127.0.0.{z}:6200/sda", "100", f"r1z{z}-127.0.0.{z}:6200/sdb", "100"]
    assert main([path, "add", *devs]) == 0
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rebalanced(builder: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, _ = run(capsys, builder, "rebalance", "--seed", "1", "--json")
    assert code == 0
    data: dict[str, object] = json.loads(out)
    return data


def test_create_add_rebalance_summary(builder: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = rebalanced(builder, capsys)
    for key in (
        "part_power",
        "partitions",
        "replicas",
        "balance",
        "dispersion",
        "devices",
        "moved",
    ):
        assert key in data
    assert data["partitions"] == 256 and data["moved"] == 768 and data["dispersion"] == 0
    devices = data["devices"]
    assert isinstance(devices, list) and len(devices) == 8
    for key in ("id", "region", "zone", "ip", "port", "device", "weight", "parts"):
        assert key in devices[0]
    assert sum(d["parts"] for d in devices) == 768
    code, out, _ = run(capsys, builder)
    assert code == 0 and "256 partitions, 3.000000 replicas" in out and "up-to-date" in out
    code, out, _ = run(capsys, builder, "--json")
    assert json.loads(out)["balance"] == data["balance"]
    ring = Ring(Path(builder).with_name("object.ring"), "p", "s")
    assert ring.partition_count == 256


def test_long_option_add_and_meta_and_replication(
    builder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, builder, "add", "--region", "2", "--zone", "1", "--ip", "::1", "--port", "6200",
        "--replication-ip", "127.0.9.9", "--replication-port", "6300", "--device", "sdx",
        "--weight", "50", "--meta", "fast",
    )  # fmt: skip
    assert code == 0 and "got id 8" in out
    code, out, _ = run(capsys, builder, "add", "r2z2-127.0.0.9:6200R127.0.1.9:6301/sdy_slow", "5")
    assert code == 0
    code, out, _ = run(capsys, builder, "search", "r2", "--json")
    found = json.loads(out)["devices"]
    assert [(d["ip"], d["replication_port"], d["meta"]) for d in found] == [
        ("::1", 6300, "fast"),
        ("127.0.0.9", 6301, "slow"),
    ]


def test_set_weight_set_info_remove(builder: str, capsys: pytest.CaptureFixture[str]) -> None:
    rebalanced(builder, capsys)
    assert run(capsys, builder, "set_weight", "d0", "50")[0] == 0
    assert run(capsys, builder, "set_info", "d1", "127.0.0.1:6200/sdq_new")[0] == 0
    assert (
        run(capsys, builder, "set_info", "d2", "--change-meta", "m2", "--change-port", "7000")[0]
        == 0
    )
    assert run(capsys, builder, "remove", "d3")[0] == 0
    b = load_builder(builder)
    assert b.get_device(0).weight == 50 and b.get_device(1).device == "sdq"
    assert (b.get_device(2).meta, b.get_device(2).port) == ("m2", 7000)
    assert [d.id for d in b.pending_removal] == [3]
    assert run(capsys, builder, "pretend_min_part_hours_passed")[0] == 0
    devices = rebalanced(builder, capsys)["devices"]
    assert isinstance(devices, list) and 3 not in [d["id"] for d in devices]


def test_list_parts_dispersion_validate_write_ring(
    builder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rebalanced(builder, capsys)
    code, out, _ = run(capsys, builder, "list_parts", "z1")
    assert (
        code == 0
        and out.splitlines()[0].startswith("Partition")
        and len(out.splitlines()) == 1 + 192  # 3 of 4 zones hold each partition
    )
    code, out, _ = run(capsys, builder, "dispersion", "--json")
    assert code == 0 and json.loads(out)["dispersion"] == 0
    assert run(capsys, builder, "dispersion")[1].startswith("Dispersion is 0.00")
    assert run(capsys, builder, "validate")[0] == 0
    ring_path = Path(builder).with_name("object.ring")
    ring_path.unlink()
    code, out, _ = run(capsys, builder, "write_ring")
    assert code == 0 and ring_path.exists()
    assert run(capsys, builder, "set_min_part_hours", "0")[0] == 0
    assert load_builder(builder).min_part_hours == 0
    assert run(capsys, builder, "set_overload", "10%")[0] == 0
    assert load_builder(builder).overload == pytest.approx(0.1)
    assert "overload factor is 10.00%" in run(capsys, builder)[1]
    assert run(capsys, builder, "set_overload", "none")[0] == 0
    assert load_builder(builder).overload is None


def test_rebalance_with_nothing_to_do_warns(
    builder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rebalanced(builder, capsys)
    code, out, _ = run(capsys, builder, "rebalance")
    assert code == 1 and "Reassigned 0" in out


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["add", "r1z1-127.0.0.1/sda", "100"],
        ["add", "r1z1-127.0.0.1:6200/sda", "heavy"],
        ["add", "r1z1-127.0.0.1:6200/sda", "100"],  # duplicate
        ["add", "r1z1-127.0.0.1:6200/sdz"],
        ["add", "--zone", "1", "--ip", "127.0.0.1"],
        ["add", "--zone", "x", "--ip", "1.1.1.1", "--port", "1", "--device", "a", "--weight", "1"],
        ["add", "--bogus", "1"],
        ["remove", "d99"],
        ["remove", "z1"],  # several devices without --yes
        ["remove", "q"],
        ["set_weight", "d0"],
        ["set_weight", "d0", "-5"],
        ["set_weight", "d99", "5"],
        ["set_info", "d0", "127.0.0.2:6200/sda"],  # would duplicate device 2's ip:port/device
        ["set_info", "d0"],
        ["search", "d99"],
        ["list_parts", "d0"],  # not rebalanced yet
        ["validate"],
        ["write_ring"],
        ["rebalance", "--seed", "x"],
        ["rebalance", "extra"],
        ["create", "8", "3", "1"],  # exists
        ["set_min_part_hours", "-1"],
        ["set_overload", "lots"],
        ["set_overload", "-5%"],
        ["frobnicate"],
    ],
)
def test_bad_input_one_line_no_change(
    builder: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    before = Path(builder).read_bytes()
    assert_one_line_error(capsys, builder, *argv)
    assert Path(builder).read_bytes() == before  # never half-written, never changed


def test_rebalance_too_few_domains_and_no_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "x.builder")
    assert main([path, "create", "6", "3", "1"]) == 0
    err = assert_one_line_error(capsys, path, "rebalance")
    assert "devices" in err
    assert main([path, "add", "r1z1-127.0.0.1:6200/sda", "1", "r1z1-127.0.0.1:6200/sdb", "1"]) == 0
    capsys.readouterr()
    before = Path(path).read_bytes()
    assert "3 replicas" in assert_one_line_error(capsys, path, "rebalance")
    assert Path(path).read_bytes() == before
    assert not (tmp_path / "x.ring").exists()


def test_bad_create_and_missing_or_corrupt_builder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "o.builder")
    assert_one_line_error(capsys, path)
    assert_one_line_error(capsys, path, "create", "99", "3", "1")
    assert_one_line_error(capsys, path, "create", "8", "three", "1")
    assert_one_line_error(capsys, path, "create", "8", "3")
    Path(path).write_bytes(b"CRNB\x00\x01garbage")
    assert_one_line_error(capsys, path, "search", "d0")
    assert run(capsys)[0] == 2
    assert run(capsys, "--help")[0] == 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verb=st.sampled_from(VERB_NAMES), args=st.lists(st.text(max_size=12), max_size=4))
def test_any_arguments_give_an_exit_code_never_a_traceback(
    builder: str, capsys: pytest.CaptureFixture[str], verb: str, args: list[str]
) -> None:
    code = main([builder, verb, *args])
    err = capsys.readouterr().err
    assert code in (0, 1, 2)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: ")


def test_big_rebalance_shows_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "big.builder")
    assert main([path, "create", "16", "3", "1"]) == 0
    devs = [x for z in (1, 2, 3) for x in (f"r1z{z}-127.0.0.{z}:6200/sda", "1")]
    assert main([path, "add", *devs]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, path, "rebalance", "--json")
    assert code == 0 and json.loads(out)["partitions"] == 65536
    assert "rebalance: planned quotas" in err and "saved builder and ring" in err
