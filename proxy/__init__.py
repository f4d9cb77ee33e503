"""The public HTTP API: Swift API v1 and S3, quorum reads and writes, auth, large objects."""
