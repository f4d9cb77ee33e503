"""Object server: objects as files on each device, with their metadata, checksums and tombstones."""
