"""Container server: container databases (object listings, stats, metadata) on LMDB."""
