"""The function's entry module: `main.py` at the source root, as Cloud Functions loads it."""

from stream.lookup.http import lookup_consent

__all__ = ["lookup_consent"]
