"""Sources and sinks: Pub/Sub in, Bigtable rows and dead letters out."""
