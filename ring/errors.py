"""The ring's typed failures: bad input or a bad file becomes one of these, not a traceback."""

from __future__ import annotations

__all__ = [
    "DeviceNotFoundError",
    "DuplicateDeviceError",
    "InvalidDeviceError",
    "RebalanceError",
    "RingBuilderError",
    "RingError",
    "RingFileError",
]


class RingError(Exception):
    """Base of every ring failure; its message is one line meant for an operator."""


class RingFileError(RingError):
    """A ring or builder file is missing, truncated, corrupt or of an unknown version."""


class RingBuilderError(RingError):
    """A builder operation was given bad arguments."""


class InvalidDeviceError(RingBuilderError):
    """A device description or search value could not be parsed or is out of range."""


class DuplicateDeviceError(RingBuilderError):
    """A device with the same ip, port and device name is already in the builder."""


class DeviceNotFoundError(RingBuilderError):
    """No device matches an id or search value."""


class RebalanceError(RingBuilderError):
    """The devices cannot hold the replicas (too few devices or failure domains)."""
