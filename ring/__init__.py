"""Swift-style consistent-hash ring: builder, ring file format, runtime lookups."""

from ring.builder import DispersionReport, RebalanceResult, RingBuilder
from ring.builder_file import load_builder, save_builder
from ring.device import Device
from ring.devspec import DeviceChange, DeviceQuery, NewDevice, parse_add, parse_change, parse_search
from ring.errors import (
    DeviceNotFoundError,
    DuplicateDeviceError,
    InvalidDeviceError,
    RebalanceError,
    RingBuilderError,
    RingError,
    RingFileError,
)
from ring.hashing import hash_path, partition_of_hash
from ring.ring import Ring
from ring.ringfile import RingData, read_ring, write_ring

__all__ = [
    "Device",
    "DeviceChange",
    "DeviceNotFoundError",
    "DeviceQuery",
    "DispersionReport",
    "DuplicateDeviceError",
    "InvalidDeviceError",
    "NewDevice",
    "RebalanceError",
    "RebalanceResult",
    "Ring",
    "RingBuilder",
    "RingBuilderError",
    "RingData",
    "RingError",
    "RingFileError",
    "hash_path",
    "load_builder",
    "parse_add",
    "parse_change",
    "parse_search",
    "partition_of_hash",
    "read_ring",
    "save_builder",
    "write_ring",
]
