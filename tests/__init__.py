"""cairn's test suite."""
