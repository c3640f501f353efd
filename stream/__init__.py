"""Streaming ingestion: Pub/Sub -> Beam -> Bigtable."""
