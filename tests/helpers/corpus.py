"""Messages of every schema and every invalid kind, with the rows and reasons they must give.

Expected cells are written out here by hand from the documented mapping, not computed with
the schema classes, so the tests check the code against the contract.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone


def iso_millis(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class ExpectedRow:
    table_group: str
    row_key: str
    timestamp_micros: int
    cells: dict[tuple[str, str], bytes]


@dataclass(frozen=True)
class ExpectedLetter:
    kind: str
    stage: str = "parse"


@dataclass
class Corpus:
    messages: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    rows: list[ExpectedRow] = field(default_factory=list)
    letters: list[ExpectedLetter] = field(default_factory=list)

    def valid(self, data: bytes, attrs: dict[str, str], row: ExpectedRow) -> None:
        self.messages.append((data, attrs))
        self.rows.append(row)

    def invalid(self, data: bytes, attrs: dict[str, str], kind: str) -> None:
        self.messages.append((data, attrs))
        self.letters.append(ExpectedLetter(kind))

    def rows_in(self, group: str) -> dict[str, ExpectedRow]:
        return {row.row_key: row for row in self.rows if row.table_group == group}


def consent_v1(
    user: uuid.UUID, domain: str, services: list[str], when: datetime, as_millis: bool = False
) -> tuple[bytes, ExpectedRow]:
    stamp: object = millis(when) if as_millis else when.isoformat()
    body = {"user": str(user), "domain": domain, "services": services, "message_timestamp": stamp}
    truncated = EPOCH + timedelta(milliseconds=millis(when))
    row = ExpectedRow(
        "consent",
        f"{domain}#{user}",
        millis(when) * 1000,
        {
            ("cf1", "services"): json.dumps(services, separators=(",", ":")).encode(),
            ("cf1", "message_timestamp"): iso_millis(truncated).encode(),
        },
    )
    return json.dumps(body).encode(), row


def build_corpus(
    now: datetime, valid_per_schema: int = 20, max_message_bytes: int = 8192
) -> Corpus:
    """`valid_per_schema` valid messages of each schema + one invalid message of each kind."""
    corpus = Corpus()
    for i in range(valid_per_schema):
        when = now - timedelta(seconds=i * 7, microseconds=i * 1234)
        # Alternate RFC 3339 with an offset and epoch millis; v1 without the attribute.
        user = uuid.uuid4()
        services = [f"essential-{1 + i % 3}", f"marketing-{1 + i % 5}"][: 1 + i % 2]
        data, row = consent_v1(user, f"shop{i % 4}.example.com", services, when, i % 2 == 1)
        corpus.valid(data, {} if i % 3 else {"schema": "consent.v1"}, row)

        user2 = uuid.uuid4()
        grants = [{"id": "essential-1", "granted": True}, {"id": "ads-2", "granted": i % 2 == 0}]
        body: dict[str, object] = {
            "user": str(user2),
            "domain": "News.Example.org",  # normalised to lower case in the key
            "region": "eu",
            "services": grants,
            "message_timestamp": when.astimezone(timezone(timedelta(hours=2))).isoformat(),
        }
        granted = [g["id"] for g in grants if g["granted"]]
        corpus.valid(
            json.dumps(body).encode(),
            {"schema": "consent.v2", "origin": "test"},
            ExpectedRow(
                "consent",
                f"news.example.org#{user2}",
                millis(when) * 1000,
                {
                    ("cf1", "services"): json.dumps(granted, separators=(",", ":")).encode(),
                    ("cf1", "message_timestamp"): iso_millis(when).encode(),
                    ("cf1", "services_detail"): json.dumps(
                        [{"granted": g["granted"], "id": g["id"]} for g in grants],
                        separators=(",", ":"),
                    ).encode(),
                    ("cf1", "region"): b"eu",
                },
            ),
        )

        device = f"sensor-{i:04d}"
        readings = {"temp_c": 20.5 + i / 4, "humidity_pct": 40.0 + i}
        body = {
            "device_id": device,
            "recorded_at": millis(when),
            "readings": readings,
            "firmware": "1.4.2",
        }
        corpus.valid(
            json.dumps(body).encode(),
            {"schema": "telemetry.v1"},
            ExpectedRow(
                "telemetry",
                f"{device}#{millis(when):013d}",
                millis(when) * 1000,
                {
                    ("m", "firmware"): b"1.4.2",
                    ("m", "recorded_at"): iso_millis(
                        EPOCH + timedelta(milliseconds=millis(when))
                    ).encode(),
                    ("r", "temp_c"): repr(readings["temp_c"]).encode(),
                    ("r", "humidity_pct"): repr(readings["humidity_pct"]).encode(),
                },
            ),
        )

    good_user = str(uuid.uuid4())
    stamp = now.isoformat()
    base = {"user": good_user, "domain": "example.com", "services": [], "message_timestamp": stamp}
    # Pub/Sub refuses a message with neither data nor attributes: empty bodies carry one.
    corpus.invalid(b"", {"schema": "consent.v1"}, "empty_payload")
    corpus.invalid(b"x" * (max_message_bytes + 1), {}, "payload_too_large")
    corpus.invalid(b"\xff\xfe{}", {}, "not_utf8")
    corpus.invalid(b'{"user": ', {}, "invalid_json")
    corpus.invalid(b"[1, 2]", {}, "invalid_json")
    corpus.invalid(json.dumps(base).encode(), {"schema": "consent.v9"}, "unknown_schema")
    corpus.invalid(json.dumps({"user": good_user}).encode(), {}, "missing_field")
    corpus.invalid(json.dumps({**base, "extra": 1}).encode(), {}, "unexpected_field")
    corpus.invalid(json.dumps({**base, "user": "not-a-uuid"}).encode(), {}, "invalid_field")
    corpus.invalid(json.dumps({**base, "services": "essential-1"}).encode(), {}, "invalid_field")
    corpus.invalid(json.dumps({**base, "domain": "no_dots"}).encode(), {}, "invalid_field")
    corpus.invalid(
        json.dumps({**base, "message_timestamp": "2001-01-01T00:00:00Z"}).encode(),
        {},
        "event_time_out_of_range",
    )
    corpus.invalid(
        json.dumps(
            {
                "device_id": "d" * 5000,
                "recorded_at": stamp,
                "readings": {"t": 1.0},
                "firmware": "1.0.0",
            }
        ).encode(),
        {"schema": "telemetry.v1"},
        "row_key_too_large",
    )
    return corpus
