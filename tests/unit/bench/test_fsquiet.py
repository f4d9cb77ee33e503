"""bench/fsquiet: a comparison sets the last run's data aside, deletes it only after
measuring (keeping its logs), and the next run learns how long ago that was (real
directories; the clock, the sync and the messages are passed in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fsquiet import QUIET_S, STAMP, purge, purge_warning, recent_purge, set_aside


def _data(d: Path, files: int = 3) -> Path:
    (d / "objects").mkdir(parents=True)
    for i in range(files):
        (d / "objects" / f"f{i}").write_bytes(b"x")
    return d


def _quiet(_: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _own_machine_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own machine-wide stamp file (never /tmp's real one)."""
    stamp = tmp_path / "machine.freed-at"
    monkeypatch.setattr("bench.fsquiet.MACHINE_STAMP", stamp)
    return stamp


def test_set_aside_renames_what_exists_and_deletes_nothing(tmp_path: Path) -> None:
    _data(tmp_path / "cairn")
    moved = set_aside(tmp_path, ("cairn", "swift"))
    assert not (tmp_path / "cairn").exists() and not (tmp_path / "swift").exists()
    assert len(moved) == 1 and moved[0].name.startswith(".fsquiet-aside-cairn-")
    assert sorted(p.name for p in (moved[0] / "objects").iterdir()) == ["f0", "f1", "f2"]
    # a later run also picks up what an interrupted one left set aside
    _data(tmp_path / "swift")
    again = set_aside(tmp_path, ("cairn", "swift"))
    assert moved[0] in again and any(p.name.startswith(".fsquiet-aside-swift-") for p in again)


def test_set_aside_never_picks_up_other_directories(tmp_path: Path) -> None:
    for other in (".old-cairn-1", "swift-venv", ".fsquiet-aside-other-1"):
        _data(tmp_path / other)
    _data(tmp_path / "cairn")
    moved = set_aside(tmp_path, ("cairn", "swift"))
    assert [p.name.split("-")[2] for p in moved] == ["cairn"]
    purge(tmp_path, moved, sync=lambda: None, say=_quiet)
    for other in (".old-cairn-1", "swift-venv", ".fsquiet-aside-other-1"):
        assert (tmp_path / other / "objects" / "f0").exists()


def test_purge_deletes_keeps_logs_syncs_and_stamps(tmp_path: Path) -> None:
    old = _data(tmp_path / ".fsquiet-aside-cairn-1")
    fresh = _data(tmp_path / "cairn")
    (fresh / "data" / "logs").mkdir(parents=True)
    (fresh / "data" / "logs" / "proxy.log").write_text("a line\n")
    swift = _data(tmp_path / "swift")
    (swift / "logs").mkdir()
    (swift / "logs" / "object-server.log").write_text("another\n")
    synced: list[bool] = []
    said: list[str] = []

    def sync() -> None:  # records that it ran, and that the deletion came first
        synced.append(not old.exists() and not fresh.exists() and not swift.exists())

    purge(tmp_path, [old, fresh, swift], now=lambda: 1000.5, sync=sync, say=said.append)
    assert not old.exists() and not fresh.exists() and not swift.exists()
    assert (tmp_path / "logs" / "cairn" / "proxy.log").read_text() == "a line\n"
    assert (tmp_path / "logs" / "swift" / "object-server.log").read_text() == "another\n"
    assert synced == [True] and len(said) == 1 and "deleting" in said[0]
    assert float((tmp_path / STAMP).read_text()) == 1000.5
    assert float((tmp_path / "machine.freed-at").read_text()) == 1000.5


def test_an_interrupted_purge_still_stamps(tmp_path: Path) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        purge(tmp_path, [_data(tmp_path / "cairn")], now=lambda: 7.0, sync=interrupted, say=_quiet)
    assert float((tmp_path / STAMP).read_text()) == 7.0


def test_purge_of_nothing_leaves_no_stamp(tmp_path: Path) -> None:
    purge(tmp_path, [tmp_path / "cairn"], now=lambda: 5.0, sync=lambda: None, say=_quiet)
    assert not (tmp_path / STAMP).exists()


def test_recent_purge_tells_how_long_ago_within_the_quiet_time(tmp_path: Path) -> None:
    assert recent_purge(tmp_path, now=lambda: 0.0) is None  # no purge recorded
    (tmp_path / STAMP).write_text("1000.0\n")
    assert recent_purge(tmp_path, now=lambda: 1020.0) == 20.0
    assert recent_purge(tmp_path, now=lambda: 1000.0 + QUIET_S) is None  # long enough ago
    assert recent_purge(tmp_path, now=lambda: 990.0) == 0.0  # a stamp from the future
    assert "deleted 20 s ago" in purge_warning(20.0)
    (tmp_path / STAMP).write_text("not a time")
    assert recent_purge(tmp_path, now=lambda: 1020.0) is None


def test_a_purge_elsewhere_on_the_machine_is_noticed(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    machine = tmp_path / "machine.freed-at"
    purge(
        there,
        [_data(there / "cairn")],
        now=lambda: 500.0,
        sync=lambda: None,
        say=_quiet,
        machine_stamp=machine,
    )
    assert not (here / STAMP).exists()
    assert recent_purge(here, now=lambda: 530.0, machine_stamp=machine) == 30.0
    assert recent_purge(here, now=lambda: 530.0, machine_stamp=tmp_path / "absent") is None
