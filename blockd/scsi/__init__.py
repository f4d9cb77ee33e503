"""SCSI block device (SBC-3 / SPC-4) for one direct-access logical unit, sans-IO."""
