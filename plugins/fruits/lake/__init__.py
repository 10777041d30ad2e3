"""The lake: its layout, the storage behind it (a bucket or a folder), ingest, and what is published."""
