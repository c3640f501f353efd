"""A schema plugin in a package of its own: installed, listed, provisioned, its rows exact.

The example package (tests/plugins/orders-events) is built and installed into a directory of
its own, on PYTHONPATH of the processes started here only: the venv is left as it was. The
pipeline (`--emulators=on`, as `make run`) provisions the plugin's table; `loadgen publish`
generates its traffic from the model's `loadgen_example`; invalid orders are replayed with
`--from-file`; `loadgen verify` judges the rows, and the letters say why each order failed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.readback import read_table, table_rows
from schemas.registry import ENTRY_POINT_GROUP, PLUGINS_ENV
from tests.helpers.load import wait_for
from tests.helpers.resources import PROJECT, new_resources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "orders-events"
ORDERS = 40
# Invalid orders, each with the kind of dead letter it must become (from the plugin's README
# contract: ids ord-<digits>, customers cus-<8 hex>, amounts >= 0, currency 3 capitals).
GOOD = {
    "order_id": "ord-000777",
    "customer": "cus-00ff00ff",
    "amount_cents": 100,
    "currency": "EUR",
    "placed_at": "2026-12-07T06:00:00.000Z",
}
INVALID = {
    "invalid_field": {**GOOD, "amount_cents": -5},
    "missing_field": {k: v for k, v in GOOD.items() if k != "currency"},
    "unexpected_field": {**GOOD, "coupon": "WINTER"},
}


@pytest.fixture(scope="module", autouse=True)
def _no_orders_schema_in_this_venv() -> None:
    # These tests install a package providing orders.v1 beside this venv's own packages.
    installed = {e.name: e.dist for e in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "orders.v1" in installed:
        dist = installed["orders.v1"]
        pytest.skip(
            f"this venv already has a plugin providing orders.v1 ({dist.name if dist else '?'}):"
            " uninstall it to run the plugin tests"
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin built and installed (no dependencies: stream-ingest is the venv's)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "orders-events"
    shutil.copytree(PLUGIN, source)  # the build writes into its source tree: not the repo's
    target = work / "site"
    # As the flex template image installs plugins: a requirements file (plugins.txt).
    requirements = work / "plugins.txt"
    requirements.write_text(f"{source}\n")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(target), "-r", str(requirements)],
        check=True,
        timeout=300,
    )
    return target


def plugin_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), PLUGINS_ENV: "on"}


def run(
    site: Path, *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=plugin_env(site),
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def test_the_example_plugins_own_tests_pass(site: Path) -> None:
    done = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
               str(PLUGIN / "pyproject.toml"), str(PLUGIN / "tests"))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "8 passed" in done.stdout


def test_the_listing_names_the_plugin_and_its_table(site: Path) -> None:
    done = run(site, "-m", "stream.schemas", "--json")
    assert done.returncode == 0, done.stderr
    (orders,) = [r for r in json.loads(done.stdout)["schemas"] if r["schema"] == "orders.v1"]
    assert orders["package"] == "orders-events"
    assert orders["model"] == "orders_events.orders.OrderV1"
    assert (orders["table_flag"], orders["default_table_id"]) == ("--orders_table", "orders")
    assert orders["row_key"] == "customer#order_id"
    assert orders["families"] == ["o"] and orders["example_traffic"] is True


DRY_RUN = [
    "infra/dataflow/launch.py",  # what the flex template launcher runs
    "--runner=DataflowRunner",
    "--project=some-project-id",
    "--region=europe-west1",
    "--temp_location=gs://some-bucket/tmp",  # a valid bucket name: nothing is looked up
    "--subscription=projects/some-project-id/subscriptions/in-sub",
    "--dry_run=True",
    "--default_schema=orders.v1",
]


def test_a_dataflow_launch_names_a_plugin_schema_only_where_it_is_installed(site: Path) -> None:
    root = PLUGIN.parents[2]
    done = run(site, *DRY_RUN, "--orders_table=orders", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "schema plugins: orders.v1 (orders-events)" in done.stderr
    assert "submitted to Dataflow" in done.stderr  # a dry run: translated, never sent
    without = subprocess.run(
        [sys.executable, *DRY_RUN],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        env={**os.environ, PLUGINS_ENV: "on"},  # on, but nothing installed
    )
    assert without.returncode == 2
    assert "--default_schema=orders.v1: no installed package provides it" in without.stderr


def test_a_plugins_messages_become_exactly_its_rows_and_letters(
    emulators: object, site: Path, tmp_path: Path
) -> None:
    resources = new_resources()
    orders_table = f"orders-{resources.suffix}"
    pipeline = PipelineProcess(
        # --emulators=on: provisioned as `make run` does, the plugin's table included.
        resources.flags("--emulators=on", f"--orders_table={orders_table}"),
        tmp_path / "pipeline.log",
        env={"PYTHONPATH": str(site), PLUGINS_ENV: "on"},
    )
    ledger = tmp_path / "ledger.sqlite"
    bad = tmp_path / "bad-orders.jsonl"
    bad.write_text("".join(json.dumps(body) + "\n" for body in INVALID.values()))
    try:
        assert wait_for(lambda: "status:" in pipeline.log(), timeout=120), pipeline.log()[-3000:]
        assert "schema plugins: orders.v1 (orders-events)" in pipeline.log()
        publish = ["-m", "loadgen", "publish", "--topic", resources.topic, "--ledger", str(ledger)]
        done = run(site, *publish, "--rate", "200", "--count", str(ORDERS),
                   "--schema-mix", "orders.v1=1")  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        done = run(site, *publish, "--rate", "50", "--count", str(len(INVALID)),
                   "--from-file", str(bad), "--from-file-schema", "orders.v1")  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "the ledger cannot predict its rows" in done.stderr
        verify = run(
            site, "-m", "loadgen", "verify", "--ledger", str(ledger), "--timeout", "90",
            "--project", PROJECT, "--instance", resources.instance,
            "--orders-table", orders_table,
            "--consent-table", resources.table("consent"),
            "--telemetry-table", resources.table("telemetry"),
            "--dead-letter-subscription", resources.dead_letter_subscription,
        )  # fmt: skip
    finally:
        pipeline.stop()
    assert verify.returncode == 0, verify.stdout[-3000:] + pipeline.log()[-3000:]
    assert (
        f"verify: sent={ORDERS + len(INVALID)} rows={ORDERS} deadletter={len(INVALID)} "
        "lost=0 duplicated=0 unexpected=0"
    ) in verify.stdout
    assert f"{len(INVALID)} dead letters of replayed messages" in verify.stdout
    table = read_table(PROJECT, resources.instance, orders_table)
    assert len(table) == ORDERS
    for key, cells in table.items():
        assert key.startswith("cus-") and "#ord-" in key
        assert sorted(cells) == [("o", "amount_cents"), ("o", "currency"), ("o", "placed_at")]
        assert all(len(versions) == 1 for versions in cells.values())  # one version a cell
    assert table_rows(PROJECT, resources.instance, resources.table("consent")) == 0
    with Ledger(ledger) as kept:
        kinds = sorted(letter.kind for letter in kept.dead_letters())
    assert kinds == sorted(INVALID)


def test_the_readmes_walkthrough_package_installs_and_registers(tmp_path: Path) -> None:
    # The README's "Your own message types" snippets, exactly as printed, become a package.
    text = (PLUGIN.parents[2] / "README.md").read_text()
    section = text.split("\n## Your own message types\n", 1)[1].split("\n## ", 1)[0]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    model = re.search(r"```python\n(.*?)```", section, re.S)
    assert toml and model
    package = tmp_path / "my-events"
    (package / "src" / "my_events").mkdir(parents=True)
    (package / "pyproject.toml").write_text(toml.group(1))
    (package / "src" / "my_events" / "__init__.py").write_text("")
    (package / "src" / "my_events" / "orders.py").write_text(model.group(1))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(package)], check=True, timeout=300)
    listed = run(site, "-m", "stream.schemas", "--json")
    assert listed.returncode == 0, listed.stderr
    (orders,) = [r for r in json.loads(listed.stdout)["schemas"] if r["schema"] == "orders.v1"]
    assert (orders["package"], orders["table_flag"]) == ("my-events", "--orders_table")
    good = {k: v for k, v in GOOD.items()}
    check = run(site, "-c", textwrap.dedent(f"""
        import json
        from pydantic import ValidationError
        from schemas.registry import schemas
        model = schemas()["orders.v1"]
        order = model.model_validate_json({json.dumps(json.dumps(good))})
        print(order.row_key(), sorted(c.qualifier.decode() for c in order.cells()))
        try:
            model.model_validate_json({json.dumps(json.dumps({**good, "amount_cents": -1}))})
        except ValidationError as exc:
            print("refused:", exc.errors()[0]["loc"])
    """))  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [
        "cus-00ff00ff#ord-000777 ['amount_cents', 'currency']",
        "refused: ('amount_cents',)",
    ]
