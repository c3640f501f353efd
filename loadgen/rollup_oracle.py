"""The rollups a ledger implies, computed from what was sent, and the rollup table read back.

Independent of the pipeline's rollup code: the aggregates are recomputed here from each row
the ledger expects (its row key, event time and cells), window by window, and compared with
the newest version of each cell in the rollup table.
"""

import json
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.cloud.bigtable.data import BigtableDataClient, ReadRowsQuery

Values = dict[str, Any]


def window_start_ms(ts_micros: int, window_ms: int) -> int:
    """The start (epoch ms) of the window holding a cell timestamp."""
    return ts_micros // 1000 // window_ms * window_ms


def window_label(start_ms: int) -> str:
    """A window start as the rollup row key spells it (RFC 3339, ms, Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_ms / 1000)) + ".000Z"


def expected_rollups(
    ledger: Path, window_ms: int, excluded: Iterable[int] = ()
) -> dict[str, Values]:
    """(key#window) -> aggregate values, from every sent message that became a row.

    `excluded`: ledger sequence numbers the rollups leave out (their events were too late).
    """
    skip = set(excluded)
    consent: dict[str, dict[tuple[str, int], list[str]]] = defaultdict(dict)
    telemetry: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    with sqlite3.connect(ledger) as db:
        rows = db.execute(
            "SELECT seq, table_group, row_key, ts, cells FROM messages"
            " WHERE expect='row' AND status='sent'"
        )
        for seq, group, key, ts, cells_json in rows:
            if seq in skip:
                continue
            cells = json.loads(cells_json)
            window = window_label(window_start_ms(ts, window_ms))
            if group == "consent":
                domain, user = key.split("#")
                granted = json.loads(cells["cf1:services"])
                consent[f"{domain}#{window}"][(user, ts)] = granted
            else:
                device = key.rsplit("#", 1)[0]
                readings = {c[2:]: float(v) for c, v in cells.items() if c.startswith("r:")}
                telemetry[f"{device}#{window}"][ts] = readings
    expected: dict[str, Values] = {}
    for key, requests in consent.items():
        values: Values = {
            "consent:requests": len(requests),
            "consent:distinct_users": len({user for user, _ in requests}),
        }
        for granted in requests.values():
            for service in granted:
                name = f"consent:service:{service}"
                values[name] = values.get(name, 0) + 1
        expected[key] = values
    for key, by_time in telemetry.items():
        stats: Values = {"telemetry:readings": len(by_time)}
        series: dict[str, list[float]] = defaultdict(list)
        for reading in by_time.values():
            for name, value in reading.items():
                series[name].append(value)
        for name, points in series.items():
            stats[f"telemetry:{name}:count"] = len(points)
            stats[f"telemetry:{name}:min"] = min(points)
            stats[f"telemetry:{name}:max"] = max(points)
            stats[f"telemetry:{name}:mean"] = sum(points) / len(points)
        expected[key] = stats
    return expected


def stored_rollups(project: str, instance: str, table_id: str) -> dict[str, Values]:
    """The rollup table, newest version of each cell, numbers parsed."""
    stored: dict[str, Values] = {}
    with BigtableDataClient(project=project) as client:
        table = client.get_table(instance, table_id)
        for row in table.read_rows(ReadRowsQuery()):
            values: Values = {}
            newest: dict[str, int] = {}
            for cell in row.cells:
                name = f"{cell.family}:{cell.qualifier.decode()}"
                if cell.timestamp_micros >= newest.get(name, -1):
                    newest[name] = cell.timestamp_micros
                    text = cell.value.decode()
                    values[name] = float(text) if "." in text else int(text)
            stored[row.row_key.decode()] = values
    return stored


def window_problems(want: Values | None, got: Values | None) -> list[str]:
    """What is wrong with one window's stored values ([] when exact)."""
    if want is None:
        return ["unexpected"]
    if got is None:
        return ["missing"]
    if want.keys() != got.keys():
        return [f"columns {sorted(want.keys() ^ got.keys())}"]
    return [
        f"{name}: expected {value}, stored {got[name]}"
        for name, value in want.items()
        if not math.isclose(float(value), float(got[name]), rel_tol=1e-9)
    ]


def differences(expected: dict[str, Values], stored: dict[str, Values]) -> list[str]:
    """Every difference, as `key problem` lines ([] when the table is exact)."""
    return [
        f"{key} {problem}"
        for key in sorted(expected.keys() | stored.keys())
        for problem in window_problems(expected.get(key), stored.get(key))
    ]
