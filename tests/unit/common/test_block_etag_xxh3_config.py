"""[block] etag_xxh3 (docs/config.md): off when the key is absent (a config written before
it still loads), on in the config `cairn up` generates for a new deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from common.deploy import load_deployment
from tools.deployment import config_text, default_config

_BASE = (
    '[cluster]\nhash_path_prefix = "a"\nhash_path_suffix = "b"\nreplicas = 3\n'
    '[[nodes]]\nname = "n1"\ndevices = [{name = "d1"}]\n'
)


def test_a_config_without_the_key_loads_with_it_off(tmp_path: Path) -> None:
    p = tmp_path / "cairn.toml"
    p.write_text(_BASE + "[block]\niscsi_port = 3260\n")
    assert load_deployment(p).block.etag_xxh3 is False
    p.write_text(_BASE + "[block]\netag_xxh3 = true\n")
    assert load_deployment(p).block.etag_xxh3 is True
    p.write_text(_BASE + "[block]\netag_xxh3 = 1\n")
    with pytest.raises(ConfigError, match="etag_xxh3"):
        load_deployment(p)


def test_a_new_deployment_turns_it_on(tmp_path: Path) -> None:
    p = tmp_path / "cairn.toml"
    p.write_text(config_text(default_config(admin_key="k", ports=list(range(20000, 20010)))))
    assert load_deployment(p).block.etag_xxh3 is True
