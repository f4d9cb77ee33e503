"""Command-line tools: cairn (up/down/status/...) and cairn-ring."""
