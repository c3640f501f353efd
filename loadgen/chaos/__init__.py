"""The chaos soak: seeded faults on both proxies and process kills under steady traffic."""
