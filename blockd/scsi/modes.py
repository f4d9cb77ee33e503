"""MODE SENSE / MODE SELECT (6) and (10) with the caching, control and
informational exceptions pages (SPC-4 7.5, SBC-3 6.5)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from blockd.scsi.sense import (
    Asc,
    ScsiError,
    SenseKey,
    invalid_cdb,
    invalid_param,
    param_length_error,
)

__all__ = ["ModeState", "mode_select", "mode_sense"]

PAGE_CACHING = 0x08
PAGE_CONTROL = 0x0A
PAGE_INFO_EXCEPTIONS = 0x1C
PAGE_ALL = 0x3F
PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3
WCE = 0x04


@dataclass
class ModeState:
    """Changeable mode values of one LU: only the write cache enable bit."""

    write_cache: bool = True


def _caching(state: ModeState, pc: int) -> bytes:
    page = bytearray(20)
    page[0], page[1] = PAGE_CACHING, 18
    if pc in (PC_CHANGEABLE, PC_DEFAULT) or state.write_cache:
        page[2] = WCE
    return bytes(page)


def _control(pc: int) -> bytes:
    page = bytearray(12)
    page[0], page[1] = PAGE_CONTROL, 10
    if pc != PC_CHANGEABLE:
        page[3] = 0x10  # queue algorithm modifier 1: unrestricted reordering
        struct.pack_into(">H", page, 8, 0xFFFF)  # busy timeout: unlimited
    return bytes(page)


def _info_exceptions(pc: int) -> bytes:
    page = bytearray(12)
    page[0], page[1] = PAGE_INFO_EXCEPTIONS, 10
    return bytes(page)


def _pages(state: ModeState, code: int, subpage: int, pc: int) -> bytes:
    if subpage not in (0x00, 0xFF) or (subpage == 0xFF and code != PAGE_ALL):
        raise invalid_cdb(3)
    table: dict[int, Callable[[], bytes]] = {
        PAGE_CACHING: lambda: _caching(state, pc),
        PAGE_CONTROL: lambda: _control(pc),
        PAGE_INFO_EXCEPTIONS: lambda: _info_exceptions(pc),
    }
    if code == PAGE_ALL:
        return b"".join(make() for make in table.values())
    make = table.get(code)
    if make is None:
        raise invalid_cdb(2)
    return make()


def mode_sense(
    state: ModeState, cdb: bytes, *, num_blocks: int, block_size: int, ten: bool
) -> bytes:
    """MODE SENSE (6) or (10) data before allocation-length truncation."""
    dbd = bool(cdb[1] & 0x08)
    llbaa = ten and bool(cdb[1] & 0x10)
    pc, code, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    if pc == PC_SAVED:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED)
    pages = _pages(state, code, subpage, pc)
    descriptor = b""
    if not dbd:
        if llbaa:
            descriptor = struct.pack(">QII", num_blocks, 0, block_size)
        else:
            count = min(num_blocks, 0xFFFFFFFF)
            descriptor = struct.pack(">IB", count, 0) + block_size.to_bytes(3, "big")
    device_specific = 0x10  # DPOFUA: DPO and FUA are supported
    if ten:
        body = bytes([0, device_specific, 0x01 if llbaa else 0, 0])
        body += struct.pack(">H", len(descriptor)) + descriptor + pages
        return struct.pack(">H", len(body)) + body
    body = bytes([0, device_specific, len(descriptor)]) + descriptor + pages
    if len(body) > 255:
        raise invalid_cdb(4)
    return bytes([len(body)]) + body


def mode_select(state: ModeState, cdb: bytes, data: bytes, *, ten: bool) -> None:
    """MODE SELECT: accept the caching page's WCE bit; other values must stay as they are."""
    if cdb[1] & 0x01:  # SP: saving pages is not supported
        raise invalid_cdb(1)
    length = struct.unpack_from(">H", cdb, 7)[0] if ten else cdb[4]
    if length == 0:
        return
    header_bytes = 8 if ten else 4
    if len(data) < length or length < header_bytes:
        raise param_length_error()
    data = data[:length]
    descriptor_bytes: int = struct.unpack_from(">H", data, 6)[0] if ten else data[3]
    offset = header_bytes + descriptor_bytes
    if offset > len(data):
        raise param_length_error()
    while offset < len(data):
        offset = _select_page(state, data, offset)


def _select_page(state: ModeState, data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise param_length_error()
    code, length = data[offset] & 0x3F, data[offset + 1]
    if data[offset] & 0x40:  # SPF: sub-page format pages are not supported
        raise invalid_param(offset)
    end = offset + 2 + length
    if end > len(data):
        raise param_length_error()
    page = data[offset:end]
    if code == PAGE_CACHING and length == 18:
        current = _caching(ModeState(write_cache=bool(page[2] & WCE)), PC_CURRENT)
        if page[2:] != current[2:]:
            raise invalid_param(offset + 2)
        state.write_cache = bool(page[2] & WCE)
    elif code == PAGE_CONTROL and length == 10:
        if page[2:] != _control(PC_CURRENT)[2:]:
            raise invalid_param(offset + 2)
    elif code == PAGE_INFO_EXCEPTIONS and length == 10:
        if page[2:] != _info_exceptions(PC_CURRENT)[2:]:
            raise invalid_param(offset + 2)
    else:
        raise invalid_param(offset)
    return end
