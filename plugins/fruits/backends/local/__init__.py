"""The local backend: the same jobs through a local spark-submit, a folder (or MinIO) as the bucket."""
