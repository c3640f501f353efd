"""Message schemas and their mapping to Bigtable rows."""
