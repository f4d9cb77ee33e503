"""`cairn bench` argument handling (no servers)."""

from __future__ import annotations

import argparse

import pytest

from bench.cli import _mix, _size, bench_main


@pytest.mark.parametrize(
    ("text", "n"),
    [("4096", 4096), ("4k", 4096), ("1m", 2**20), ("256MiB", 256 * 2**20), ("1G", 2**30), ("0", 0)],
)
def test_sizes(text: str, n: int) -> None:
    assert _size(text) == n


@pytest.mark.parametrize("text", ["", "k", "4x", "-1", "1.5m"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _size(text)


def test_mix() -> None:
    assert _mix("put=1,get=4") == {"put": 1.0, "get": 4.0}
    assert _mix("list") == {"list": 1.0}
    for bad in ("post=1", "put=x", "put=-1", "put=nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            _mix(bad)


def test_run_needs_an_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["run"]) == 2
    assert "--auth-url" in capsys.readouterr().err


def test_run_rejects_unknown_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_main(
        [
            "run",
            "--storage-url",
            "http://127.0.0.1:9/v1/AUTH_x",
            "--token",
            "t",
            "--workloads",
            "put4k,fly",
        ]
    )
    assert code == 2 and "fly" in capsys.readouterr().err


def test_run_reports_an_unreachable_auth_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens, so auth fails fast and cleanly.
    assert bench_main(["run", "--auth-url", "http://127.0.0.1:9/auth/v1.0", "--key", "k"]) == 1
    assert "auth at" in capsys.readouterr().err


def test_compare_rejects_unknown_workloads_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = bench_main(["compare", "--quick", "--workloads", "put256m,fly"])
    assert code == 2 and "fly" in capsys.readouterr().err


def test_compare_rejects_reps_below_one_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = bench_main(["compare", "--quick", "--workloads", "put4k", "--reps", "0"])
    assert code == 2 and "--reps must be at least 1" in capsys.readouterr().err


def test_compare_function_rejects_reps_below_one(tmp_path: object) -> None:
    from pathlib import Path

    from bench.compare import compare

    with pytest.raises(ValueError, match="reps"):
        compare(Path(str(tmp_path)), True, Path(str(tmp_path)), workloads=("put4k",), reps=0)


def test_compare_function_rejects_unknown_workloads(tmp_path: object) -> None:
    from pathlib import Path

    from bench.compare import compare

    with pytest.raises(ValueError, match="fly"):
        compare(Path(str(tmp_path)), True, Path(str(tmp_path)), workloads=("fly",))
