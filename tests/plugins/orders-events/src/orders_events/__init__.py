"""Order events for stream-ingest (an example schema plugin)."""
