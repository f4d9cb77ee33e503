"""Failure domains and the quota plan: how many partition-replicas each domain should hold.

The devices form a tree: region -> zone -> server (ip) -> device. Each domain gets a
*per-partition cap*: the most replicas of one partition it may hold if replicas are spread as
uniquely as possible (``ceil(parent_cap / weighted siblings)``, never more than its device count,
1 for a device). Quotas are then dealt top-down by weight ("water filling"): a domain gets its
weight share of its parent's quota unless that exceeds ``cap * partitions``, in which case it is
clipped and the rest goes to its siblings. So dispersion comes first and weight second, exactly
the order operators expect; `balance` then reports any weight skew that dispersion forced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ring.device import Device
from ring.errors import RebalanceError

__all__ = ["LEVELS", "Plan", "make_plan", "water_fill"]

LEVELS = ("region", "zone", "server")


@dataclass(slots=True)
class _Node:
    weight: float = 0.0
    ndev: int = 0
    children: dict[object, _Node] = field(default_factory=dict)
    dev_id: int = -1
    quota: int = 0
    cap: int = 0  # per-partition cap used for placement
    cap_topology: int = 0  # per-partition cap the topology alone allows (dispersion report)


@dataclass(slots=True)
class Plan:
    """Quotas and failure-domain tables for one rebalance.

    `dom[level][dev_id]` is the domain index of a device at that level (-1 for unknown ids);
    `cap[level][domain]` the per-partition cap of that domain (levels as in LEVELS) that
    placement honours; `cap_topology` the cap spreading alone allows, which dispersion reports.
    """

    partitions: int
    replicas_max: int
    quota: dict[int, int]
    dom: list[list[int]]
    cap: list[list[int]]
    cap_topology: list[list[int]]
    layout: list[list[int]]
    order: list[int]
    root: _Node


def water_fill(total: int, weights: list[float], caps: list[int], prefer: list[int]) -> list[int]:
    """Split `total` integer units by weight, each share clipped to its cap.

    Rounding goes by largest remainder, then by `prefer` (larger first: current holdings, so
    fewer units move), then by position; it is deterministic.
    """
    if sum(caps) < total:
        raise RebalanceError("not enough devices or failure domains to hold every replica")
    n = len(weights)
    out = [0] * n
    free = [i for i in range(n) if caps[i] > 0]
    remaining = total
    while free:
        wsum = sum(weights[i] for i in free)
        over = [i for i in free if remaining * weights[i] > caps[i] * wsum]
        if not over:
            break
        for i in over:
            out[i] = caps[i]
            remaining -= caps[i]
        free = [i for i in free if i not in set(over)]
    if not free:
        return out
    wsum = sum(weights[i] for i in free)
    shares = {i: remaining * weights[i] / wsum for i in free}
    for i in free:
        out[i] = min(caps[i], math.floor(shares[i]))
    deficit = remaining - sum(out[i] for i in free)
    ranked = sorted(free, key=lambda i: (-(shares[i] - math.floor(shares[i])), -prefer[i], i))
    for i in ranked:
        if deficit <= 0:
            break
        if out[i] < caps[i]:
            out[i] += 1
            deficit -= 1
    assert deficit == 0, "water filling lost units"
    return out


def _build_tree(devs: Iterable[Device]) -> _Node:
    root = _Node()
    for d in sorted(devs, key=lambda d: (d.region, d.zone, d.ip, d.id)):
        node = root
        for key in (d.region, (d.region, d.zone), d.server):
            node.weight += d.weight
            node.ndev += 1
            node = node.children.setdefault(key, _Node())
        node.weight += d.weight
        node.ndev += 1
        node.children[d.id] = _Node(weight=d.weight, ndev=1, dev_id=d.id)
    return root


def _subtree_held(node: _Node, held: Mapping[int, int]) -> int:
    if node.dev_id >= 0:
        return held.get(node.dev_id, 0)
    return sum(_subtree_held(c, held) for c in node.children.values())


def _soft_caps(node: _Node, kids: list[_Node], partitions: int, overload: float) -> list[int]:
    """Caps when dispersion may push a domain at most `overload` over its weight share.

    A domain that dispersion clips below its weight share keeps whatever its siblings cannot
    absorb within their overload, so weight wins where the two disagree beyond the overload.
    """
    wsum = sum(k.weight for k in kids)
    shares = [node.quota * k.weight / wsum for k in kids]
    hard = [min(k.ndev * partitions, node.quota) for k in kids]
    want = [min(h, math.ceil(s)) for h, s in zip(hard, shares, strict=True)]
    caps = [
        min(h, k.cap * partitions, math.ceil(s * (1 + overload)))
        for h, k, s in zip(hard, kids, shares, strict=True)
    ]
    deficit = node.quota - sum(caps)
    for i in sorted(range(len(kids)), key=lambda i: caps[i] - want[i]):
        if deficit <= 0:
            break
        raise_by = min(deficit, max(0, want[i] - caps[i]))
        caps[i] += raise_by
        deficit -= raise_by
    return caps if deficit <= 0 else hard


def _allot(node: _Node, partitions: int, held: Mapping[int, int], overload: float | None) -> None:
    kids = list(node.children.values())
    if not kids:
        return
    for k in kids:
        k.cap = k.cap_topology = min(-(-node.cap // len(kids)), k.ndev)
    if overload is None:
        caps = [k.cap * partitions for k in kids]
    else:
        caps = _soft_caps(node, kids, partitions, overload)
    quotas = water_fill(
        node.quota, [k.weight for k in kids], caps, [_subtree_held(k, held) for k in kids]
    )
    for k, q in zip(kids, quotas, strict=True):
        k.quota = q
        k.cap = max(k.cap, min(k.ndev, -(-q // partitions)))  # weight may out-rank dispersion
        _allot(k, partitions, held, overload)


def _interleave(lists: list[list[int]]) -> list[int]:
    out: list[int] = []
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def _order(node: _Node) -> list[int]:
    """Devices in round-robin order across the tree: neighbours differ in the highest tier."""
    if node.dev_id >= 0:
        return [node.dev_id]
    return _interleave([_order(c) for c in node.children.values()])


def _layout(node: _Node, partitions: int, out: list[list[int]]) -> None:
    """Groups for the first placement, in slot order; a group's slots interleave its devices.

    A domain whose quota fits in one column of partitions becomes one group; bigger ones are
    split into their children, so each domain's slots stay contiguous (see placement.py).
    """
    if node.quota <= 0:
        return
    if node.dev_id >= 0 or node.quota <= partitions:
        out.append(_order(node))
        return
    for c in node.children.values():
        _layout(c, partitions, out)


def _domains(
    devs: list[Device], root: _Node, ids_max: int
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    dom = [[-1] * (ids_max + 1) for _ in LEVELS]
    cap: list[list[int]] = [[] for _ in LEVELS]
    cap_topology: list[list[int]] = [[] for _ in LEVELS]
    index: list[dict[object, int]] = [{} for _ in LEVELS]
    weighted: list[dict[object, _Node]] = [{}, {}, {}]
    for rkey, rnode in root.children.items():
        weighted[0][rkey] = rnode
        for zkey, znode in rnode.children.items():
            weighted[1][zkey] = znode
            for skey, snode in znode.children.items():
                weighted[2][skey] = snode
    for d in sorted(devs, key=lambda d: (d.region, d.zone, d.ip, d.id)):
        for level, key in enumerate((d.region, (d.region, d.zone), d.server)):
            if key not in index[level]:
                index[level][key] = len(cap[level])
                node = weighted[level].get(key)
                cap[level].append(node.cap if node is not None else 1)
                cap_topology[level].append(node.cap_topology if node is not None else 1)
            dom[level][d.id] = index[level][key]
    return dom, cap, cap_topology


def make_plan(
    devs: list[Device],
    partitions: int,
    slots: int,
    replicas_max: int,
    held: Mapping[int, int],
    retired: Iterable[Device] = (),
    overload: float | None = None,
) -> Plan:
    """Quotas for `slots` partition-replicas over the weighted devices among `devs`.

    `held` maps device id to partition-replicas it holds now (tie-breaks toward less movement);
    `retired` devices (removed, still holding partitions) get domain entries but no quota.
    `overload` None puts dispersion first; a number lets dispersion push a domain at most that
    fraction over its weight share (Swift's overload), weight deciding beyond it.
    """
    weighted = [d for d in devs if d.weight > 0]
    if len(weighted) < replicas_max:
        raise RebalanceError(
            f"{replicas_max} replicas need at least {replicas_max} devices with weight > 0, "
            f"found {len(weighted)}"
        )
    root = _build_tree(weighted)
    root.cap = root.cap_topology = replicas_max
    root.quota = slots
    _allot(root, partitions, held, overload)
    quota: dict[int, int] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node.dev_id >= 0:
            quota[node.dev_id] = node.quota
        stack.extend(node.children.values())
    every = devs + list(retired)
    dom, cap, cap_topology = _domains(every, root, max(d.id for d in every))
    layout: list[list[int]] = []
    _layout(root, partitions, layout)
    return Plan(partitions, replicas_max, quota, dom, cap, cap_topology, layout, _order(root), root)
