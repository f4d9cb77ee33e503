"""Per-node daemon figures for `cairn status`, read from the storage servers' recon endpoints.

Each background daemon writes `<devices_dir>/recon/<daemon>.json`; the storage server of its
kind serves it at `GET /recon/<daemon>`. This module asks every node for every daemon's file
(in parallel, with a short timeout) and folds them into one summary per node: replication
pass time, partitions in sync, async pendings and quarantined files.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.deploy import DeploymentConfig, StorageNodeConfig

__all__ = ["RECON_DAEMONS", "fetch_recon", "format_node", "node_summaries", "summarize"]

# Which server serves which daemon's recon file.
RECON_DAEMONS: dict[str, tuple[str, ...]] = {
    "object": ("object-replicator", "object-auditor", "object-updater", "object-expirer"),
    "container": ("container-replicator", "container-updater"),
    "account": ("account-replicator",),
}
_TIMEOUT_S = 2.0
_BODY_BYTES_MAX = 1 << 20
_WORKERS_MAX = 16


def _port(node: StorageNodeConfig, kind: str) -> int:
    return {
        "object": node.object_port,
        "container": node.container_port,
        "account": node.account_port,
    }[kind]


def fetch_recon(
    node: StorageNodeConfig, kind: str, daemon: str, timeout_s: float = _TIMEOUT_S
) -> dict[str, Any] | None:
    """One daemon's recon document from a node, or None (down, not written yet, bad JSON)."""
    host = f"[{node.host}]" if ":" in node.host else node.host
    url = f"http://{host}:{_port(node, kind)}/recon/{daemon}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            data = json.loads(r.read(_BODY_BYTES_MAX))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _find(doc: dict[str, Any] | None, *keys: str) -> Any:
    """The first of `keys` present in `doc` or in its `stats`/`last_pass` sub-objects."""
    if not doc:
        return None
    scopes = [
        doc,
        *(doc[k] for k in ("stats", "last_pass", "pass") if isinstance(doc.get(k), dict)),
    ]
    for scope in scopes:
        for k in keys:
            if k in scope and scope[k] is not None:
                return scope[k]
    return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def summarize(name: str, recon: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Fold one node's recon documents (daemon -> doc or None) into its status line."""
    repl = recon.get("object-replicator")
    pending = _find(recon.get("object-updater"), "async_pendings", "async_pending", "pending")
    # the auditor counts what sits in the quarantine directories after its pass
    quarantined = _num(_find(recon.get("object-auditor"), "quarantined_total", "quarantined"))
    in_sync = _num(_find(repl, "partitions_in_sync", "in_sync"))
    total = _num(_find(repl, "partitions_total", "partitions"))
    return {
        "name": name,
        "reachable": any(v is not None for v in recon.values()),
        "replication_pass_s": _num(_find(repl, "pass_seconds", "replication_time_s")),
        "replication_last_s": _num(_find(repl, "pass_finished")),
        "partitions_in_sync": int(in_sync) if in_sync is not None else None,
        "partitions": int(total) if total is not None else None,
        "async_pendings": int(p) if (p := _num(pending)) is not None else None,
        "quarantined": int(quarantined) if quarantined is not None else None,
        "recon": recon,
    }


def node_summaries(cfg: DeploymentConfig, timeout_s: float = _TIMEOUT_S) -> list[dict[str, Any]]:
    """Every node's summary (parallel fetches; an unreachable node just has no figures)."""
    jobs = [
        (n, kind, daemon)
        for n in cfg.nodes
        for kind, daemons in RECON_DAEMONS.items()
        for daemon in daemons
    ]
    with ThreadPoolExecutor(max_workers=min(_WORKERS_MAX, max(1, len(jobs)))) as pool:
        docs = list(pool.map(lambda j: fetch_recon(j[0], j[1], j[2], timeout_s), jobs))
    per_node: dict[str, dict[str, dict[str, Any] | None]] = {n.name: {} for n in cfg.nodes}
    for (n, _kind, daemon), doc in zip(jobs, docs, strict=True):
        per_node[n.name][daemon] = doc
    return [summarize(n.name, per_node[n.name]) for n in cfg.nodes]


def _show(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def format_node(n: dict[str, Any]) -> str:
    """One human line per node for `cairn status`."""
    if not n["reachable"]:
        return f"  node {n['name']:<10} no daemon figures yet (recon not reachable)"
    parts = n["partitions"]
    in_sync = _show(n["partitions_in_sync"]) + (f"/{parts}" if parts is not None else "")
    return (
        f"  node {n['name']:<10} replication pass {_show(n['replication_pass_s'], 's')}"
        f"  in sync {in_sync}  async pendings {_show(n['async_pendings'])}"
        f"  quarantined {_show(n['quarantined'])}"
    )
