"""Service selection for `cairn up --only/--host`, state files, and recon summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from common.deploy import load_deployment
from tools.deployment import config_text, default_config, select_specs, service_specs
from tools.recon import format_node, summarize
from tools.supervisor import read_states, state_path
from tools.up import selection_tag


def _specs(tmp_path: Path):
    doc = default_config(admin_key="k", ports=list(range(20000, 20010)))
    doc["nodes"][1]["host"] = "198.18.7.3"
    path = tmp_path / "c.toml"
    path.write_text(config_text(doc))
    cfg = load_deployment(path, data_dir=tmp_path)
    return service_specs(cfg, path)


def test_only_selects_a_node_with_its_daemons(tmp_path: Path) -> None:
    specs = select_specs(_specs(tmp_path), ["node2"])
    assert specs and all(s.group == "node2" for s in specs)
    assert {"node2-object", "node2-container", "node2-account"} <= {s.name for s in specs}
    assert all(s.url.startswith("http://198.18.7.3:") for s in specs if s.url)


def test_host_selects_what_listens_there(tmp_path: Path) -> None:
    specs = select_specs(_specs(tmp_path), host="198.18.7.3")
    assert {s.group for s in specs} == {"node2"}
    both = select_specs(_specs(tmp_path), ["proxy", "node1"])
    assert {s.group for s in both} == {"proxy", "node1"}


def test_bad_selections_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nodeX"):
        select_specs(_specs(tmp_path), ["nodeX"])
    with pytest.raises(ConfigError, match=r"10\.9\.9\.9"):
        select_specs(_specs(tmp_path), host="10.9.9.9")


def test_selection_tags_and_state_files(tmp_path: Path) -> None:
    assert selection_tag(None, None) == ""
    assert selection_tag(["node1"], "198.18.0.2") == "node1-198.18.0.2"
    assert selection_tag(["a/b"], None) == "a_b"
    assert state_path(tmp_path, "node1").name == "state-node1.json"
    (tmp_path / "run").mkdir()
    state_path(tmp_path).write_text('{"version": 1, "services": []}')
    state_path(tmp_path, "node1").write_text('{"version": 1, "tag": "node1"}')
    (tmp_path / "run" / "state-bad.json").write_text("not json")
    (tmp_path / "run" / "state-old.json").write_text('{"version": 99}')
    assert len(read_states(tmp_path)) == 2


def test_recon_summary_reads_daemon_figures() -> None:
    n = summarize(
        "node1",
        {
            "object-replicator": {
                "version": 1,
                "pass_seconds": 1.5,
                "pass_finished": 1800000000.0,
                "stats": {"partitions_in_sync": 40, "partitions_total": 41},
            },
            "object-updater": {"stats": {"async_pendings": 3}},
            "object-auditor": {"stats": {"quarantined": 1, "quarantined_total": 2}},
            "container-replicator": None,
        },
    )
    assert n["reachable"] is True
    assert (n["replication_pass_s"], n["partitions_in_sync"]) == (1.5, 40)
    assert (n["async_pendings"], n["quarantined"]) == (3, 2)
    assert n["partitions"] == 41
    assert "in sync 40/41" in format_node(n)
    down = summarize("node2", {"object-replicator": None})
    assert down["reachable"] is False and down["async_pendings"] is None
    assert "not reachable" in format_node(down)


def test_volume_args_take_data_dir_anywhere() -> None:
    from tools.volume import split_data_dir

    assert split_data_dir(["list", "--data-dir", "/x"]) == (Path("/x"), ["list"])
    assert split_data_dir(["--data-dir=/y", "show", "v"]) == (Path("/y"), ["show", "v"])
    with pytest.raises(ConfigError):
        split_data_dir(["list", "--data-dir"])
