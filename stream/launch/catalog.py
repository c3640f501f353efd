"""The operators' service catalog (`--service_catalog`): read once at start-up, then shipped."""

import json
import re

from apache_beam.io.filesystems import FileSystems

from schemas.consent import MAX_SERVICE_ID, SERVICE_ID_PATTERN

_ID = re.compile(SERVICE_ID_PATTERN)


class CatalogError(ValueError):
    """The catalog cannot be used; the message says which file and which lines."""


def parse_catalog(text: str, source: str) -> frozenset[str]:
    """Service ids from a catalog's text: a JSON list of ids, or one id per line.

    In the line form, blank lines and `#` comments are ignored and ids are stripped. Every
    id must have the form the schemas accept (e.g. `web_performance_and_analytics-3`), or
    the whole catalog is refused: an id no message can carry is a typo in the catalog.
    """
    stripped = text.lstrip("\ufeff").strip()
    entries: list[tuple[str, object]]
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{source}: not a JSON list of service ids: {exc}") from None
        if not isinstance(items, list):
            raise CatalogError(f"{source}: not a JSON list of service ids")
        entries = [(f"item {i}", item) for i, item in enumerate(items)]
    else:
        entries = []
        for number, line in enumerate(stripped.splitlines(), start=1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append((f"line {number}", entry))
    problems = [
        f"{where}: {item!r}"
        for where, item in entries
        if not isinstance(item, str) or len(item) > MAX_SERVICE_ID or not _ID.match(item)
    ]
    if problems:
        more = f"; and {len(problems) - 5} more" if problems[5:] else ""
        shown = "; ".join(problems[:5]) + more
        raise CatalogError(
            f"{source}: not service ids (a category and a number, e.g. essential-1): {shown}"
        )
    if not entries:
        raise CatalogError(f"{source}: the catalog lists no service ids")
    return frozenset(str(item) for _, item in entries)


def load_catalog(path: str) -> frozenset[str]:
    """Read a catalog from any Beam filesystem (a local path, gs://...)."""
    try:
        with FileSystems.open(path) as handle:
            raw = handle.read()
    except Exception as exc:  # Beam wraps every filesystem's errors differently
        raise CatalogError(f"{path}: cannot read the service catalog: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: the service catalog is not UTF-8: {exc}") from None
    return parse_catalog(text, path)
