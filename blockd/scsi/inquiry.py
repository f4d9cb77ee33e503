"""INQUIRY data: the standard page and the VPD pages 00h, 80h, 83h, B0h, B1h, B2h (SPC-4, SBC-3)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from blockd.scsi.sense import invalid_cdb

__all__ = ["LuLimits", "inquiry"]

VENDOR = b"CAIRN   "
PRODUCT = b"BLOCK VOLUME    "
REVISION = b"0001"
# Version descriptors: SAM-5, iSCSI (no version claimed), SPC-4, SBC-3.
VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04C0)
VPD_PAGES = (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2)
IEEE_OUI = 0x001405  # the NAA IEEE registered extended designator needs an OUI


@dataclass(frozen=True, slots=True)
class LuLimits:
    """Limits the LU reports in VPD B0h and enforces."""

    # The iSCSI layer refuses commands moving more than 8 MiB (ConnectionConfig.command_bytes_max);
    # the block counts below are derived per block size.
    transfer_bytes_max: int = 8 << 20
    optimal_transfer_bytes: int = 1 << 20
    unmap_blocks_max: int = 1 << 20
    unmap_descriptors_max: int = 256
    write_same_blocks_max: int = 16384
    compare_write_blocks_max: int = 255

    def transfer_blocks_max(self, block_size: int) -> int:
        return self.transfer_bytes_max // block_size

    def optimal_transfer_blocks(self, block_size: int) -> int:
        return self.optimal_transfer_bytes // block_size


def standard_inquiry(lun_present: bool) -> bytes:
    data = bytearray(66 + 8)
    data[0] = 0x00 if lun_present else 0x7F  # direct-access device / no LU at this LUN
    data[2] = 0x06  # SPC-4
    data[3] = 0x12  # HiSup, response data format 2
    data[4] = len(data) - 5
    data[7] = 0x02  # CmdQue
    data[8:16] = VENDOR
    data[16:32] = PRODUCT
    data[32:36] = REVISION
    for i, desc in enumerate(VERSION_DESCRIPTORS):
        struct.pack_into(">H", data, 58 + 2 * i, desc)
    return bytes(data)


def _vpd(page: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0, page, len(body)) + body


def naa_id(serial: str) -> bytes:
    """A stable 16-byte NAA 6 designator derived from the unit serial."""
    digest = hashlib.sha256(serial.encode()).digest()
    vendor_bits = int.from_bytes(digest[:13], "big") & ((1 << 100) - 1)
    value = (6 << 124) | (IEEE_OUI << 100) | vendor_bits
    return value.to_bytes(16, "big")


def _designator(code_set: int, assoc_type: int, body: bytes, protocol: int = 0) -> bytes:
    return bytes([(protocol << 4) | code_set, assoc_type, 0, len(body)]) + body


def device_identification(serial: str) -> bytes:
    descriptors = [
        _designator(1, 0x03, naa_id(serial)),  # LU, NAA
        _designator(2, 0x01, VENDOR + serial.encode()),  # LU, T10 vendor ID
        _designator(1, 0x80 | 0x10 | 0x04, struct.pack(">I", 1), protocol=5),  # rel. port 1
        _designator(1, 0x80 | 0x10 | 0x05, struct.pack(">I", 1), protocol=5),  # port group 1
    ]
    return b"".join(descriptors)


def block_limits(limits: LuLimits, block_size: int) -> bytes:
    body = bytearray(0x3C)
    body[0] = 0x01  # WSNZ: WRITE SAME with zero blocks is not supported
    body[1] = limits.compare_write_blocks_max
    struct.pack_into(">H", body, 2, 1)  # optimal transfer length granularity
    struct.pack_into(">I", body, 4, limits.transfer_blocks_max(block_size))
    struct.pack_into(">I", body, 8, limits.optimal_transfer_blocks(block_size))
    struct.pack_into(">I", body, 12, limits.transfer_blocks_max(block_size))  # max prefetch
    struct.pack_into(">I", body, 16, limits.unmap_blocks_max)
    struct.pack_into(">I", body, 20, limits.unmap_descriptors_max)
    struct.pack_into(">I", body, 24, 1)  # optimal unmap granularity
    struct.pack_into(">Q", body, 32, limits.write_same_blocks_max)
    return bytes(body)


def inquiry(
    cdb: bytes, serial: str, limits: LuLimits, lun_present: bool, block_size: int = 512
) -> bytes:
    """INQUIRY data for ``cdb`` (not yet truncated to the allocation length)."""
    evpd, page = cdb[1] & 0x01, cdb[2]
    if cdb[1] & 0xFE:
        raise invalid_cdb(1)
    if not evpd:
        if page:
            raise invalid_cdb(2)
        return standard_inquiry(lun_present)
    if page == 0x00:
        return _vpd(0x00, bytes(VPD_PAGES))
    if page == 0x80:
        return _vpd(0x80, serial.encode())
    if page == 0x83:
        return _vpd(0x83, device_identification(serial))
    if page == 0xB0:
        return _vpd(0xB0, block_limits(limits, block_size))
    if page == 0xB1:
        return _vpd(0xB1, struct.pack(">H", 1) + bytes(0x3A))  # non-rotating medium
    if page == 0xB2:
        # threshold exponent 0; LBPU, LBPWS, LBPWS10, LBPRZ; provisioning type thin (2)
        return _vpd(0xB2, bytes([0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0]))
    raise invalid_cdb(2)
