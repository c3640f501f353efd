"""`python -m stream.schemas`: every registered message type, built-in and plugins'."""
