"""Account server: account databases (container listings, stats, metadata) on LMDB."""
