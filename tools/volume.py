"""`cairn volume ...`: the block volume API of the deployment in `--data-dir`.

The endpoint is the deployment's block `api_port`; the token is the first admin user's
tempauth token, fetched from the proxy (`GET /auth/v1.0` with X-Auth-User/X-Auth-Key).
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
import urllib.request
from pathlib import Path

from common.config import ConfigError
from common.deploy import DeploymentConfig
from tools.locate import load_cfg

__all__ = ["admin_token", "load_cfg", "split_data_dir", "volume_main"]

_TIMEOUT_S = 10.0
DEFAULT_DATA_DIR = Path("./cairn-data")


def split_data_dir(argv: list[str]) -> tuple[Path, list[str]]:
    """Take `--data-dir DIR` (or `--data-dir=DIR`) out of argv wherever it is."""
    data_dir = DEFAULT_DATA_DIR
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--data-dir":
            if i + 1 >= len(argv):
                raise ConfigError("--data-dir needs a directory")
            data_dir = Path(argv[i + 1])
            i += 2
            continue
        if a.startswith("--data-dir="):
            data_dir = Path(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return data_dir, rest


def admin_token(cfg: DeploymentConfig, timeout_s: float = _TIMEOUT_S) -> tuple[str, str]:
    """A tempauth token for the deployment's first admin user, and its project (the storage
    account named by X-Storage-Url, e.g. AUTH_admin)."""
    user = next((u for u in cfg.tempauth.users if u.admin), None)
    if user is None:
        raise ConfigError("the deployment has no admin tempauth user")
    p = cfg.proxy
    host = f"[{p.host}]" if ":" in p.host else p.host
    req = urllib.request.Request(
        f"http://{host}:{p.port}/auth/v1.0",
        headers={"X-Auth-User": f"{user.account}:{user.user}", "X-Auth-Key": user.key},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310
            token = r.headers.get("X-Auth-Token", "")
            storage_url = r.headers.get("X-Storage-Url", "")
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"cannot get a token from the proxy: {e}") from None
    if not token:
        raise ConfigError("the proxy answered without an X-Auth-Token")
    project = storage_url.rstrip("/").rsplit("/", 1)[-1] if storage_url else ""
    if not project:
        project = f"{cfg.tempauth.reseller_prefixes[0]}{user.account}"
    return str(token), project


def volume_main(argv: list[str]) -> int:
    if importlib.util.find_spec("blockd.volclient") is None:
        print("cairn: block volumes are not installed", file=sys.stderr)
        return 2
    from blockd.volclient import run_volume_cli

    data_dir, rest = split_data_dir(argv)
    if not rest or rest[0] in ("-h", "--help"):
        return run_volume_cli(rest, "http://unused", "")
    cfg = load_cfg(data_dir)
    if not cfg.block.enabled:
        print("cairn: block volumes are disabled in this deployment", file=sys.stderr)
        return 2
    b = cfg.block
    host = f"[{b.host}]" if ":" in b.host else b.host
    token, project = admin_token(cfg)
    return run_volume_cli(rest, f"http://{host}:{b.api_port}/v3/{project}", token)
