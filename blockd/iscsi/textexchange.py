"""Text requests in full feature phase (RFC 7143 11.10): SendTargets, and long answers split
over several Text Responses with the continuation protocol. Sans-IO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blockd.iscsi.pdu import RESERVED_TAG, ProtocolError
from blockd.iscsi.text import TextError, decode_text, encode_text

__all__ = ["TextExchange", "TextReply"]


@dataclass(frozen=True, slots=True)
class TextReply:
    """One Text Response to send: ``ttt`` is reserved on the final piece."""

    ttt: int
    final: bool
    data: bytes


class TextExchange:
    """Answers Text Requests of one connection; remembers the rest of a long answer."""

    def __init__(
        self,
        list_targets: Callable[[], list[str]],
        portal_address: str,
        portal_group_tag: int,
        new_ttt: Callable[[], int],
    ) -> None:
        self._list_targets = list_targets
        self._address = f"{portal_address},{portal_group_tag}"
        self._new_ttt = new_ttt
        self._pending: tuple[int, bytes] | None = None  # (TTT, rest of a long answer)

    def respond(
        self, data: bytes, *, ttt: int, cont: bool, own_target: str | None, chunk_bytes: int
    ) -> TextReply:
        """The reply to one Text Request (``own_target`` is None in a discovery session)."""
        if ttt != RESERVED_TAG and self._pending is not None and ttt == self._pending[0]:
            return self._piece(self._pending[1], chunk_bytes)
        if cont:
            raise ProtocolError("multi-PDU Text requests are not supported")
        try:
            keys = decode_text(data)
        except TextError as exc:
            raise ProtocolError(f"bad text: {exc}") from exc
        answer: list[tuple[str, str]] = []
        for key, value in keys:
            if key == "SendTargets":
                answer += self._send_targets(value, own_target)
            else:
                answer.append((key, "NotUnderstood"))
        return self._piece(encode_text(answer), chunk_bytes)

    def _send_targets(self, value: str, own_target: str | None) -> list[tuple[str, str]]:
        if value == "All" and own_target is None:
            names = self._list_targets()
        elif value in ("All", ""):
            names = [own_target] if own_target else []
        else:
            names = [name for name in self._list_targets() if name == value]
        out: list[tuple[str, str]] = []
        for name in names:
            out += [("TargetName", name), ("TargetAddress", self._address)]
        return out

    def _piece(self, text: bytes, chunk_bytes: int) -> TextReply:
        if len(text) > chunk_bytes:
            ttt = self._new_ttt()
            self._pending = (ttt, text[chunk_bytes:])
            return TextReply(ttt, False, text[:chunk_bytes])
        self._pending = None
        return TextReply(RESERVED_TAG, True, text)
