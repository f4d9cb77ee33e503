"""The S3 front of the proxy: sans-IO protocol pieces (auth, aws-chunked, checksums, XML,
request classification, ACL mapping, multipart rules). See docs/s3.md."""
