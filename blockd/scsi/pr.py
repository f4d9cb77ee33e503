"""Persistent reservations (SPC-4 5.12, PERSISTENT RESERVE IN/OUT), in memory per LU.

An I_T nexus is named by a string (the iSCSI initiator port name ``iqn...,i,0x<ISID>``).
Persist Through Power Loss is not supported (PTPL_C = 0): state lives as long as the target.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from blockd.scsi.sense import (
    Asc,
    ScsiError,
    SenseKey,
    conflict,
    invalid_cdb,
    invalid_param,
    param_length_error,
)

__all__ = ["AccessKind", "PrState", "pr_in", "pr_out"]

WR_EX, EX_AC, WR_EX_RO, EX_AC_RO, WR_EX_AR, EX_AC_AR = 1, 3, 5, 6, 7, 8
TYPES = frozenset({WR_EX, EX_AC, WR_EX_RO, EX_AC_RO, WR_EX_AR, EX_AC_AR})
ALL_REGISTRANTS = frozenset({WR_EX_AR, EX_AC_AR})
REGISTRANTS_ONLY = frozenset({WR_EX_RO, EX_AC_RO})
EXCLUSIVE_ACCESS = frozenset({EX_AC, EX_AC_RO, EX_AC_AR})
REGISTRATIONS_MAX = 1024

PR_OUT_PARAM_BYTES = 24
SA_REGISTER, SA_RESERVE, SA_RELEASE, SA_CLEAR = 0, 1, 2, 3
SA_PREEMPT, SA_PREEMPT_ABORT, SA_REGISTER_IGNORE = 4, 5, 6
SA_READ_KEYS, SA_READ_RESERVATION, SA_REPORT_CAPABILITIES, SA_READ_FULL_STATUS = 0, 1, 2, 3


class AccessKind:
    ALWAYS = "always"  # allowed under every reservation (INQUIRY, REPORT LUNS, ...)
    READ = "read"
    WRITE = "write"


@dataclass
class PrState:
    generation: int = 0
    keys: dict[str, int] = field(default_factory=dict)  # nexus -> reservation key
    holder: str | None = None  # nexus holding the reservation (any registrant for *_AR types)
    type: int = 0

    def check_access(self, nexus: str, kind: str) -> None:
        """Raise RESERVATION CONFLICT if ``nexus`` may not run a command of ``kind``."""
        if self.holder is None or kind == AccessKind.ALWAYS or self._is_holder(nexus):
            return
        registered = nexus in self.keys
        if self.type in (ALL_REGISTRANTS | REGISTRANTS_ONLY) and registered:
            return
        if kind == AccessKind.WRITE or self.type in EXCLUSIVE_ACCESS:
            raise conflict()

    def _is_holder(self, nexus: str) -> bool:
        if self.type in ALL_REGISTRANTS:
            return nexus in self.keys
        return self.holder == nexus

    def _reservation_key(self) -> int:
        if self.holder is None or self.type in ALL_REGISTRANTS:
            return 0
        return self.keys.get(self.holder, 0)


def pr_in(state: PrState, cdb: bytes) -> bytes:
    """PERSISTENT RESERVE IN data (before allocation-length truncation)."""
    action = cdb[1] & 0x1F
    if action == SA_READ_KEYS:
        keys = b"".join(struct.pack(">Q", k) for k in state.keys.values())
        return struct.pack(">II", state.generation, len(keys)) + keys
    if action == SA_READ_RESERVATION:
        if state.holder is None:
            return struct.pack(">II", state.generation, 0)
        body = struct.pack(">QIBBH", state._reservation_key(), 0, 0, state.type, 0)
        return struct.pack(">II", state.generation, len(body)) + body
    if action == SA_REPORT_CAPABILITIES:
        # CRH=1, ATP_C=1, TMV=1 with WR_EX, EX_AC, WR_EX_RO, EX_AC_RO, WR_EX_AR, EX_AC_AR
        return bytes([0, 8, 0x10 | 0x04, 0x80, 0xEA, 0x01, 0, 0])
    if action == SA_READ_FULL_STATUS:
        return _full_status(state)
    raise invalid_cdb(1)


def _full_status(state: PrState) -> bytes:
    descriptors = []
    for nexus, key in state.keys.items():
        holder = state.holder is not None and state._is_holder(nexus)
        name = nexus.encode()
        name += bytes(4 - len(name) % 4)  # NUL-terminate and pad to a multiple of 4
        transport_id = bytes([0x45, 0]) + struct.pack(">H", len(name)) + name
        descriptors.append(
            struct.pack(
                ">Q4sBB4sHI",
                key,
                b"",
                0x01 if holder else 0,
                state.type if holder else 0,
                b"",
                1,
                len(transport_id),
            )
            + transport_id
        )
    body = b"".join(descriptors)
    return struct.pack(">II", state.generation, len(body)) + body


@dataclass(frozen=True, slots=True)
class _OutParams:
    key: int
    sa_key: int
    flags: int


def pr_out(state: PrState, nexus: str, cdb: bytes, data: bytes) -> None:
    """Apply PERSISTENT RESERVE OUT; raise ScsiError on errors and conflicts."""
    action = cdb[1] & 0x1F
    scope, rtype = cdb[2] >> 4, cdb[2] & 0x0F
    length = struct.unpack_from(">I", cdb, 5)[0]
    if action > SA_REGISTER_IGNORE:
        raise invalid_cdb(1)
    if length != PR_OUT_PARAM_BYTES or len(data) < PR_OUT_PARAM_BYTES:
        raise param_length_error()
    key, sa_key = struct.unpack_from(">QQ", data)
    params = _OutParams(key, sa_key, data[20])
    if params.flags & 0x01 or params.flags & 0x08:  # APTPL and SPEC_I_PT are not supported
        raise invalid_param(20)
    if action in (SA_REGISTER, SA_REGISTER_IGNORE):
        _register(state, nexus, params, ignore=action == SA_REGISTER_IGNORE)
        return
    if state.keys.get(nexus) != key:
        raise conflict()
    if action in (SA_RESERVE, SA_RELEASE, SA_PREEMPT, SA_PREEMPT_ABORT) and (
        scope != 0 or rtype not in TYPES
    ):
        raise invalid_cdb(2)
    if action == SA_RESERVE:
        _reserve(state, nexus, rtype)
    elif action == SA_RELEASE:
        _release(state, nexus, rtype)
    elif action == SA_CLEAR:
        state.keys.clear()
        state.holder, state.type = None, 0
        state.generation += 1
    else:
        _preempt(state, nexus, rtype, params.sa_key)


def _register(state: PrState, nexus: str, params: _OutParams, *, ignore: bool) -> None:
    current = state.keys.get(nexus)
    if not ignore and (current if current is not None else 0) != params.key:
        raise conflict()
    if params.sa_key == 0:
        if current is not None:
            _unregister(state, nexus)
            state.generation += 1
        return
    if current is None and len(state.keys) >= REGISTRATIONS_MAX:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, (0x55, 0x04))  # registration resources
    state.keys[nexus] = params.sa_key
    state.generation += 1


def _unregister(state: PrState, nexus: str) -> None:
    del state.keys[nexus]
    if state.holder is None:
        return
    if state.type in ALL_REGISTRANTS:
        if not state.keys:
            state.holder, state.type = None, 0
        elif state.holder == nexus:
            state.holder = next(iter(state.keys))
    elif state.holder == nexus:
        state.holder, state.type = None, 0


def _reserve(state: PrState, nexus: str, rtype: int) -> None:
    if state.holder is None:
        state.holder, state.type = nexus, rtype
        return
    if state._is_holder(nexus) and state.type == rtype:
        return
    raise conflict()


def _release(state: PrState, nexus: str, rtype: int) -> None:
    if state.holder is None or not state._is_holder(nexus):
        return
    if state.type != rtype:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_RELEASE_OF_PR)
    state.holder, state.type = None, 0


def _preempt(state: PrState, nexus: str, rtype: int, sa_key: int) -> None:
    all_registrants = state.holder is not None and state.type in ALL_REGISTRANTS
    if sa_key == 0 and not all_registrants:
        raise invalid_param(8)
    holder_preempted = all_registrants if sa_key == 0 else state._reservation_key() == sa_key
    if state.holder is None or not holder_preempted:
        victims = [n for n, k in state.keys.items() if k == sa_key]
        if not victims:
            raise conflict()
        for victim in victims:
            _unregister(state, victim)
        state.generation += 1
        return
    victims = [n for n, k in state.keys.items() if n != nexus and sa_key in (0, k)]
    for victim in victims:
        del state.keys[victim]
    state.holder, state.type = nexus, rtype
    state.generation += 1
