"""Schema plugins: discovered through entry points, refused with the package and the fix.

Each case installs a tiny distribution into a temporary directory (a `*.dist-info` with its
`entry_points.txt`, and the module it names), discovered by importlib.metadata as pip's are.
"""

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest

from loadgen.traffic import TrafficGenerator, TrafficOptions
from schemas.base import MappedEvent
from schemas.consent import ConsentV1
from schemas.registry import (
    BUILT_IN,
    BUILT_IN_PACKAGE,
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    Registry,
    SchemaPluginError,
    load,
)
from stream.schemas.listing import describe

REPO = Path(__file__).resolve().parents[2]

MODELS = '''
import random
from datetime import datetime
from typing import Any

from schemas.base import Column, Encoding, Example, MappedEvent, TableSpec

TABLE = TableSpec(group="widgets", default_table_id="widgets", families=("w",))


class _Widget(MappedEvent):
    """A widget."""

    table = TABLE
    columns = (Column("w", "colour", Encoding.TEXT),)
    widget: str
    colour: str
    at: datetime

    def row_key(self) -> str:
        """`widget`: one row per widget."""
        return self.widget

    def event_time(self) -> datetime:
        return self.at

    def column_values(self) -> dict[str, Any]:
        return {"colour": self.colour}


class WidgetV1(_Widget):
    schema_name = "widgets.v1"

    @classmethod
    def loadgen_example(cls, rng: random.Random, now: datetime) -> Example:
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = {"widget": f"w{rng.randrange(100)}", "colour": "red", "at": stamp}
        return Example(body, body["widget"], now, {"w:colour": "red"})


class WidgetV2(WidgetV1):
    """The same table, another version."""

    schema_name = "widgets.v2"


class NoExample(_Widget):
    schema_name = "widgets.v3"


class Consent(WidgetV1):
    schema_name = "consent.v1"


class OtherConsentTable(WidgetV1):
    schema_name = "gadgets.v1"
    table = TableSpec(group="consent", default_table_id="mine", families=("g",))


class Rollups(WidgetV1):
    schema_name = "gadgets.v2"
    table = TableSpec(group="rollup", default_table_id="mine", families=("g",))


class BadGroup(WidgetV1):
    schema_name = "gadgets.v3"
    table = TableSpec(group="My-Group", default_table_id="mine", families=("g",))


NOT_A_MODEL = object()
'''


def install(tmp: Path, package: str, entries: dict[str, str]) -> Path:
    """A distribution `package` whose entry points are `entries`; returns its site dir."""
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "widget_models.py").write_text(MODELS)
    (site / "broken_models.py").write_text("import no_such_module_here\n")
    info = site / f"{package.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return site


def found(site: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("widget_models", None)
    entries = [
        entry
        for dist in metadata.distributions(path=[str(site)])
        for entry in dist.entry_points
        if entry.group == ENTRY_POINT_GROUP
    ]
    return load(entries)


def refusal(site: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(SchemaPluginError) as caught:
        found(site, monkeypatch)
    return str(caught.value)


def test_without_plugins_the_registry_is_the_built_ins() -> None:
    registry = load([])
    assert registry.schemas == BUILT_IN
    assert set(registry.packages.values()) == {BUILT_IN_PACKAGE}
    assert set(registry.tables) == {"consent", "telemetry"}


def test_a_plugin_registers_beside_the_built_ins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install(
        tmp_path,
        "acme-widgets",
        {"widgets.v1": "widget_models:WidgetV1", "widgets.v2": "widget_models:WidgetV2"},
    )
    registry = found(site, monkeypatch)
    assert set(registry.schemas) == {*BUILT_IN, "widgets.v1", "widgets.v2"}
    assert registry.schemas["consent.v1"] is ConsentV1
    assert registry.packages["widgets.v1"] == registry.packages["widgets.v2"] == "acme-widgets"
    assert registry.tables["widgets"].families == ("w",)  # two versions share one table
    (record,) = [r for r in describe(registry) if r["schema"] == "widgets.v1"]
    assert record == {
        "schema": "widgets.v1",
        "package": "acme-widgets",
        "model": "widget_models.WidgetV1",
        "table_group": "widgets",
        "table_flag": "--widgets_table",
        "default_table_id": "widgets",
        "row_key": "`widget`: one row per widget.",
        "families": ["w"],
        "cells": [{"column": "w:colour", "encoding": "text"}],
        "dynamic_cells": [],
        "example_traffic": True,
    }


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (
            {"consent.v1": "widget_models:Consent"},
            "schema 'consent.v1' of package 'acme-widgets' is already provided by 'stream-ingest'",
        ),
        ({"widgets.v1": "widget_models:NOT_A_MODEL"}, "is not a subclass of schemas.base"),
        ({"widgets.v1": "broken_models:Anything"}, "failed to import: ModuleNotFoundError"),
        ({"widgets.v1": "widget_models:WidgetV2"}, "the model's schema_name is 'widgets.v2'"),
        ({"Widgets": "widget_models:WidgetV1"}, "a schema name is lower-case words joined"),
        ({"gadgets.v1": "widget_models:OtherConsentTable"}, "declares table group 'consent'"),
        ({"gadgets.v2": "widget_models:Rollups"}, "the pipeline keeps for itself"),
        ({"gadgets.v3": "widget_models:BadGroup"}, "names the --<group>_table flag"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: dict[str, str], says: str
) -> None:
    message = refusal(install(tmp_path, "acme-widgets", entries), monkeypatch)
    assert "acme-widgets" in message
    assert says in message


def test_two_plugins_with_one_schema_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install(tmp_path, "acme-widgets", {"widgets.v1": "widget_models:WidgetV1"})
    other = site / "other_widgets-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-widgets\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nwidgets.v1 = widget_models:WidgetV1\n"
    )
    message = refusal(site, monkeypatch)
    assert "is already provided by" in message
    assert "acme-widgets" in message and "other-widgets" in message


def test_the_pipeline_stops_at_start_naming_a_broken_plugin(tmp_path: Path) -> None:
    site = install(tmp_path, "acme-widgets", {"widgets.v1": "broken_models:Anything"})
    env = {"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"}
    for command in (["stream.main", "--streaming"], ["stream.schemas"], ["loadgen", "verify"]):
        done = subprocess.run(
            [sys.executable, "-m", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "schema plugin 'widgets.v1' of package 'acme-widgets'" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_listing_shows_a_plugin_as_json(tmp_path: Path) -> None:
    site = install(tmp_path, "acme-widgets", {"widgets.v1": "widget_models:WidgetV1"})
    done = subprocess.run(
        [sys.executable, "-m", "stream.schemas", "--json"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    listed = {r["schema"]: r["package"] for r in json.loads(done.stdout)["schemas"]}
    expected = {**dict.fromkeys(BUILT_IN, BUILT_IN_PACKAGE), "widgets.v1": "acme-widgets"}
    assert {name: listed[name] for name in expected if name in listed} == expected
    assert set(listed) - set(expected) <= installed_elsewhere()  # plugins of this venv


def installed_elsewhere() -> set[str]:
    """Schemas that plugins installed in this venv provide (a developer's own)."""
    return {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def test_loadgen_generates_a_plugin_schema_from_its_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install(
        tmp_path,
        "acme-widgets",
        {"widgets.v1": "widget_models:WidgetV1", "widgets.v3": "widget_models:NoExample"},
    )
    registry = found(site, monkeypatch)
    monkeypatch.setattr("loadgen.traffic.schemas", lambda: registry.schemas)
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    options = TrafficOptions(seed=3, schema_mix={"widgets.v1": 1.0})
    planned = [p for p, _ in zip(TrafficGenerator(options, clock=now), range(3), strict=False)]
    for p in planned:
        body = json.loads(p.data)
        assert p.expect == "row" and p.schema == "widgets.v1"
        assert p.attributes == {"schema": "widgets.v1"}
        assert (p.table_group, p.row_key, p.cells) == (
            "widgets",
            body["widget"],
            {"w:colour": "red"},
        )
        assert p.timestamp_micros == int(now.timestamp()) * 1_000_000
    with pytest.raises(ValueError, match=r"widgets.v3 offer no loadgen_example.*--from-file"):
        TrafficGenerator(TrafficOptions(schema_mix={"widgets.v3": 1.0}))


def test_only_a_model_that_implements_the_hook_offers_an_example() -> None:
    assert not ConsentV1.offers_example()  # the generator builds built-ins itself
    with pytest.raises(NotImplementedError):
        MappedEvent.loadgen_example.__func__(ConsentV1, random.Random(1), datetime.now(UTC))  # type: ignore[attr-defined]


def test_with_plugins_off_no_entry_point_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(**_: object) -> object:
        raise AssertionError("entry points read although plugins are off")

    monkeypatch.setenv(PLUGINS_ENV, "off")
    monkeypatch.setattr(metadata, "entry_points", never)
    assert load().schemas == BUILT_IN
    monkeypatch.setenv(PLUGINS_ENV, "on")
    with pytest.raises(AssertionError, match="although plugins are off"):
        load()
