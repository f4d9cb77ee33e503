"""Image service in the style of Glance: images stored as cairn objects."""
