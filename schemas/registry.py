"""Message attribute value (e.g. `schema=consent.v1`) -> the model that validates it.

The built-in models sit beside the ones installed packages declare as entry points of the
group `stream_ingest.schemas` (`orders.v1 = "my_events.orders:OrderV1"`): README, "Your own
message types". Plugins are loaded once per process, on first use (`load` at start-up).
"""

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

from schemas.base import MappedEvent, TableSpec
from schemas.consent import CONSENT_TABLE, ConsentV1, ConsentV2
from schemas.telemetry import TELEMETRY_TABLE, TelemetryV1

SCHEMA_ATTRIBUTE = "schema"  # the message attribute naming the schema (--schema_attribute)
DEFAULT_SCHEMA = ConsentV1.schema_name  # for messages without it (--default_schema)
ENTRY_POINT_GROUP = "stream_ingest.schemas"
BUILT_IN_PACKAGE = "stream-ingest"  # this distribution
# "off": built-in schemas only (the test suite sets it: plugins in the venv change nothing).
PLUGINS_ENV = "STREAM_SCHEMA_PLUGINS"

BUILT_IN: dict[str, type[MappedEvent]] = {
    model.schema_name: model for model in (ConsentV1, ConsentV2, TelemetryV1)
}
# Where built-in events land (one row per event); stream/pipeline/tables.py adds the rollups'.
BUILT_IN_TABLES: dict[str, TableSpec] = {
    spec.group: spec for spec in (CONSENT_TABLE, TELEMETRY_TABLE)
}
# Table groups that are not event tables: a plugin may not take these names.
RESERVED_GROUPS = frozenset({"rollup"})
GROUP_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
SCHEMA_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")  # = metadata.json's regex


class SchemaPluginError(Exception):
    """An installed schema plugin cannot be used: the message names its package and the fix."""


def _package(entry: metadata.EntryPoint) -> str:
    dist = entry.dist
    return dist.name if dist is not None else f"<unknown package of {entry.value}>"


def _model(entry: metadata.EntryPoint, package: str) -> type[MappedEvent]:
    where = f"schema plugin {entry.name!r} of package {package!r} ({entry.value})"
    try:
        model = entry.load()
    except Exception as exc:  # any import failure of foreign code: named, with its cause
        raise SchemaPluginError(
            f"{where} failed to import: {type(exc).__name__}: {exc}. Fix or reinstall "
            f"{package}, or uninstall it (pip uninstall {package})."
        ) from exc
    if not (isinstance(model, type) and issubclass(model, MappedEvent)):
        raise SchemaPluginError(
            f"{where} names {model!r}, which is not a subclass of schemas.base.MappedEvent: "
            "point the entry point at the model class."
        )
    if not SCHEMA_NAME_RE.match(entry.name):
        raise SchemaPluginError(
            f"{where}: a schema name is lower-case words joined by dots, e.g. orders.v1 "
            "(the form the Dataflow template accepts for --default_schema)."
        )
    declared = getattr(model, "schema_name", None)
    if declared != entry.name:
        raise SchemaPluginError(
            f"{where}: the model's schema_name is {declared!r}; name the entry point "
            f"{declared!r} or set schema_name = {entry.name!r}."
        )
    table = getattr(model, "table", None)
    if not isinstance(table, TableSpec):
        raise SchemaPluginError(f"{where}: the model has no `table` (a schemas.base.TableSpec).")
    if not GROUP_RE.match(table.group) or not table.families:
        raise SchemaPluginError(
            f"{where}: its TableSpec needs a group of [a-z0-9_] starting with a letter (it "
            f"names the --<group>_table flag; got {table.group!r}) and at least one family."
        )
    return model


@dataclass(frozen=True, slots=True)
class Registry:
    """Every schema of a process: name -> model and providing package; every event table."""

    schemas: dict[str, type[MappedEvent]]
    packages: dict[str, str]
    tables: dict[str, TableSpec]


def load(entries: Iterable[metadata.EntryPoint] | None = None) -> Registry:
    """The built-in schemas and every installed plugin's; SchemaPluginError on any conflict."""
    if entries is not None:
        found: Iterable[metadata.EntryPoint] = entries
    elif os.environ.get(PLUGINS_ENV, "on") == "off":
        found = ()
    else:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    models = dict(BUILT_IN)
    packages = dict.fromkeys(BUILT_IN, BUILT_IN_PACKAGE)
    tables = dict(BUILT_IN_TABLES)
    table_packages = dict.fromkeys(BUILT_IN_TABLES, BUILT_IN_PACKAGE)
    for entry in sorted(found, key=lambda e: e.name):
        package = _package(entry)
        if entry.name in models:
            raise SchemaPluginError(
                f"schema {entry.name!r} of package {package!r} is already provided by "
                f"{packages[entry.name]!r}: give the plugin's schema another name "
                "(e.g. a version suffix)."
            )
        model = _model(entry, package)
        spec = model.table
        if spec.group in RESERVED_GROUPS:
            raise SchemaPluginError(
                f"schema {entry.name!r} of package {package!r} uses the table group "
                f"{spec.group!r}, which the pipeline keeps for itself: choose another group."
            )
        known = tables.setdefault(spec.group, spec)
        owner = table_packages.setdefault(spec.group, package)
        if known != spec:
            raise SchemaPluginError(
                f"schema {entry.name!r} of package {package!r} declares table group "
                f"{spec.group!r} as {spec}, but {owner!r} declares it as {known}: "
                "choose another group, or share the same TableSpec."
            )
        models[entry.name] = model
        packages[entry.name] = package
    return Registry(models, packages, tables)


@functools.cache
def registry() -> Registry:
    """Every schema of this process, built-in and installed plugins (loaded once)."""
    return load()


def schemas() -> dict[str, type[MappedEvent]]:
    """Schema name -> model, built-in and installed plugins."""
    return registry().schemas


def event_tables() -> dict[str, TableSpec]:
    """Table group -> spec of every event table (built-in and plugins')."""
    return registry().tables
