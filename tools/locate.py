"""Find the deployment a `cairn` sub-command acts on, from its `--data-dir`."""

from __future__ import annotations

from pathlib import Path

from common.config import ConfigError
from common.deploy import DeploymentConfig, load_deployment
from tools.deployment import CONFIG_NAME
from tools.supervisor import read_states

__all__ = ["load_cfg"]


def load_cfg(data_dir: Path) -> DeploymentConfig:
    """The deployment a running `cairn up` uses (its state file names the config), else the
    data dir's own `cairn.toml`."""
    data_dir = data_dir.resolve()
    for st in read_states(data_dir):
        cfg_path = st.get("config")
        if isinstance(cfg_path, str) and cfg_path and Path(cfg_path).exists():
            return load_deployment(cfg_path, data_dir=data_dir)
    path = data_dir / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"no deployment in {data_dir} (run `cairn up` first)")
    return load_deployment(path, data_dir=data_dir)
