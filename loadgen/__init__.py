"""Load generator, ledger and verifier for the ingestion pipeline."""
