"""Operational parameter negotiation (RFC 7143 6.2 and 13), table-driven and sans-IO.

The initiator offers keys; for each we answer by the rule in :data:`KEYS` (boolean AND/OR,
numeric min/max, list choice, declarative) against the target's preferences in
:class:`TargetLimits`, and record the outcome in a :class:`SessionParams`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["KEYS", "Negotiator", "Rule", "SessionParams", "TargetLimits"]

NUM_LIMIT = (1 << 24) - 1


class Rule(Enum):
    AND = "and"  # boolean, result Yes only if both say Yes
    OR = "or"  # boolean, result Yes if either says Yes
    MIN = "min"  # numeric, result is the smaller
    MAX = "max"  # numeric, result is the larger
    LIST = "list"  # the first value in the offer we support
    DECLARE = "declare"  # initiator declares its own value; no answer
    IRRELEVANT = "irrelevant"  # always answered with Irrelevant
    TARGET_ONLY = "target_only"  # only the target may send it


@dataclass(frozen=True, slots=True)
class KeySpec:
    rule: Rule
    field: str = ""  # SessionParams field the result goes to
    lo: int = 0
    hi: int = NUM_LIMIT
    normal_only: bool = False  # Irrelevant in discovery sessions


@dataclass(frozen=True, slots=True)
class TargetLimits:
    """The target's side of every negotiation; defaults suit a disk on a fast LAN."""

    max_recv_data_segment_bytes: int = 256 * 1024
    max_burst_bytes: int = 1024 * 1024
    first_burst_bytes: int = 256 * 1024
    initial_r2t: bool = False
    immediate_data: bool = True
    max_outstanding_r2t: int = 16
    max_connections: int = 1
    default_time2wait_s: int = 2
    default_time2retain_s: int = 20
    error_recovery_level: int = 0
    digests: tuple[str, ...] = ("CRC32C", "None")


@dataclass(frozen=True, slots=True)
class SessionParams:
    """Negotiated values, starting at the RFC defaults (what applies when a key is not sent)."""

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_burst_bytes: int = 262144
    first_burst_bytes: int = 65536
    max_outstanding_r2t: int = 1
    default_time2wait_s: int = 2
    default_time2retain_s: int = 20
    error_recovery_level: int = 0
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    initiator_recv_data_segment_bytes: int = 8192  # the initiator's MaxRecvDataSegmentLength


KEYS: dict[str, KeySpec] = {
    "HeaderDigest": KeySpec(Rule.LIST, "header_digest"),
    "DataDigest": KeySpec(Rule.LIST, "data_digest"),
    "MaxConnections": KeySpec(Rule.MIN, "max_connections", 1, 65535, normal_only=True),
    "InitialR2T": KeySpec(Rule.OR, "initial_r2t", normal_only=True),
    "ImmediateData": KeySpec(Rule.AND, "immediate_data", normal_only=True),
    "MaxRecvDataSegmentLength": KeySpec(
        Rule.DECLARE, "initiator_recv_data_segment_bytes", 512, NUM_LIMIT
    ),
    "MaxBurstLength": KeySpec(Rule.MIN, "max_burst_bytes", 512, NUM_LIMIT, normal_only=True),
    "FirstBurstLength": KeySpec(Rule.MIN, "first_burst_bytes", 512, NUM_LIMIT, normal_only=True),
    "MaxOutstandingR2T": KeySpec(Rule.MIN, "max_outstanding_r2t", 1, 65535, normal_only=True),
    "DefaultTime2Wait": KeySpec(Rule.MAX, "default_time2wait_s", 0, 3600),
    "DefaultTime2Retain": KeySpec(Rule.MIN, "default_time2retain_s", 0, 3600),
    "ErrorRecoveryLevel": KeySpec(Rule.MIN, "error_recovery_level", 0, 2),
    "DataPDUInOrder": KeySpec(Rule.OR, "data_pdu_in_order", normal_only=True),
    "DataSequenceInOrder": KeySpec(Rule.OR, "data_sequence_in_order", normal_only=True),
    "IFMarker": KeySpec(Rule.AND),
    "OFMarker": KeySpec(Rule.AND),
    "IFMarkInt": KeySpec(Rule.IRRELEVANT),
    "OFMarkInt": KeySpec(Rule.IRRELEVANT),
    "InitiatorName": KeySpec(Rule.DECLARE),
    "InitiatorAlias": KeySpec(Rule.DECLARE),
    "TargetName": KeySpec(Rule.DECLARE),
    "SessionType": KeySpec(Rule.DECLARE),
    "TargetAlias": KeySpec(Rule.TARGET_ONLY),
    "TargetAddress": KeySpec(Rule.TARGET_ONLY),
    "TargetPortalGroupTag": KeySpec(Rule.TARGET_ONLY),
}

_OURS: dict[str, Callable[[TargetLimits], int | bool]] = {
    "MaxConnections": lambda t: t.max_connections,
    "InitialR2T": lambda t: t.initial_r2t,
    "ImmediateData": lambda t: t.immediate_data,
    "MaxBurstLength": lambda t: t.max_burst_bytes,
    "FirstBurstLength": lambda t: t.first_burst_bytes,
    "MaxOutstandingR2T": lambda t: t.max_outstanding_r2t,
    "DefaultTime2Wait": lambda t: t.default_time2wait_s,
    "DefaultTime2Retain": lambda t: t.default_time2retain_s,
    "ErrorRecoveryLevel": lambda t: t.error_recovery_level,
    "DataPDUInOrder": lambda t: True,
    "DataSequenceInOrder": lambda t: True,
    "IFMarker": lambda t: False,
    "OFMarker": lambda t: False,
}


def parse_number(value: str) -> int | None:
    """A decimal or 0x-hex number as RFC 7143 5.1 allows, or None."""
    try:
        if value[:2] in ("0x", "0X"):
            return int(value[2:], 16)
        if value.isdigit():
            return int(value)
    except ValueError:
        return None
    return None


def _yes_no(value: bool) -> str:
    return "Yes" if value else "No"


class Negotiator:
    """Answers operational keys for one session; ``params`` holds the outcome so far."""

    def __init__(self, limits: TargetLimits, *, discovery: bool) -> None:
        self.limits = limits
        self.discovery = discovery
        self.params = SessionParams()
        self.declared_mrdsl = False

    def answer(self, key: str, value: str) -> tuple[str, str] | None:
        """Our response pair for an offered key, or None when no answer is due."""
        spec = KEYS.get(key)
        if spec is None:
            return (key, "NotUnderstood")
        if spec.rule is Rule.TARGET_ONLY:
            return (key, "Reject")
        if spec.rule is Rule.IRRELEVANT or (spec.normal_only and self.discovery):
            return (key, "Irrelevant")
        if spec.rule is Rule.DECLARE:
            return self._declare(spec, key, value)
        if spec.rule is Rule.LIST:
            return self._choose(spec, key, value)
        if spec.rule in (Rule.AND, Rule.OR):
            return self._boolean(spec, key, value)
        return self._numeric(spec, key, value)

    def _set(self, field: str, value: int | bool) -> None:
        if field:
            changes: dict[str, Any] = {field: value}
            self.params = dataclasses.replace(self.params, **changes)

    def _declare(self, spec: KeySpec, key: str, value: str) -> tuple[str, str] | None:
        if not spec.field:
            return None
        number = parse_number(value)
        if number is None or not spec.lo <= number <= spec.hi:
            return (key, "Reject")
        self._set(spec.field, number)
        return None

    def _choose(self, spec: KeySpec, key: str, value: str) -> tuple[str, str]:
        for option in value.split(","):
            if option in self.limits.digests:
                self._set(spec.field, option == "CRC32C")
                return (key, option)
        return (key, "Reject")

    def _boolean(self, spec: KeySpec, key: str, value: str) -> tuple[str, str]:
        if value not in ("Yes", "No"):
            return (key, "Reject")
        theirs = value == "Yes"
        ours = bool(_OURS[key](self.limits))
        result = (theirs and ours) if spec.rule is Rule.AND else (theirs or ours)
        self._set(spec.field, result)
        return (key, _yes_no(result))

    def _numeric(self, spec: KeySpec, key: str, value: str) -> tuple[str, str]:
        number = parse_number(value)
        if number is None or not spec.lo <= number <= spec.hi:
            return (key, "Reject")
        ours = int(_OURS[key](self.limits))
        result = min(number, ours) if spec.rule is Rule.MIN else max(number, ours)
        self._set(spec.field, result)
        return (key, str(result))

    def finish(self) -> SessionParams:
        """The final parameters, with FirstBurstLength clamped to MaxBurstLength (RFC 13.14)."""
        params = self.params
        if params.first_burst_bytes > params.max_burst_bytes:
            params = dataclasses.replace(params, first_burst_bytes=params.max_burst_bytes)
        self.params = params
        return params
