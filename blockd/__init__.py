"""Block volumes as chunk objects, exported by cairn's own iSCSI target, with a volume API."""
