"""What the sans-IO :class:`blockd.iscsi.connection.Connection` hands its I/O loop, its
configuration and the constants it shares with its task management.

Split out of ``connection.py`` (the state machine itself stays there); everything here is
re-exported from ``blockd.iscsi.connection``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from blockd.iscsi.negotiation import TargetLimits

__all__ = [
    "Close",
    "ConnectionConfig",
    "Event",
    "Execute",
    "Phase",
    "ResetLu",
    "sn_lt",
]

SERIAL_HALF = 1 << 31

TMF_ABORT_TASK = 1
TMF_ABORT_TASK_SET = 2
TMF_CLEAR_ACA = 3
TMF_CLEAR_TASK_SET = 4
TMF_LUN_RESET = 5
TMF_TARGET_WARM_RESET = 6
TMF_TARGET_COLD_RESET = 7
TMF_TASK_REASSIGN = 8
TMF_COMPLETE, TMF_NO_TASK, TMF_NO_LUN, TMF_NOT_SUPPORTED = 0, 1, 2, 5
TMF_REASSIGN_NOT_SUPPORTED = 4


def sn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982) on 32 bits: a < b."""
    return a != b and ((b - a) & 0xFFFFFFFF) < SERIAL_HALF


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    limits: TargetLimits = field(default_factory=TargetLimits)
    queue_depth: int = 64
    # Largest ExpectedDataTransferLength accepted; with queue_depth this bounds the write data a
    # connection buffers (queue_depth * command_bytes_max).
    command_bytes_max: int = 8 << 20
    portal_group_tag: int = 1
    portal_address: str = "127.0.0.1:3260"


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class Execute:
    """Run ``cdb`` on ``target``'s LU ``lun``; then call ``complete(itt, result)``."""

    itt: int
    target: str
    lun: int
    cdb: bytes
    data_out: bytes
    nexus: str


@dataclass(frozen=True, slots=True)
class ResetLu:
    """A LUN or target reset: the loop resets ``target``'s LU (SPC-2 reservations end)."""

    target: str
    target_reset: bool


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


Event = Execute | ResetLu | Close


class Phase(enum.Enum):
    LOGIN = "login"
    FULL_FEATURE = "full_feature"
    CLOSED = "closed"
