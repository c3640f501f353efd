"""Local and development tooling: the emulators and the resources on them."""
