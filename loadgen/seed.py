"""The seed product's traffic, exactly: its request-file lines and its `scale_endpoint` stamp.

Facts from ../shared/SEED.md. The request generator writes one `json.dumps` line per request
(default separators, no timestamp): a uuid4 user, one of five domains, and
`random.sample(SERVICES, random.randrange(25))` services. The Cloud Function re-publishes each
with `message_timestamp` = the triggering message's publish time (RFC 3339, ms, `Z`).
"""

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

SEED_DOMAINS = (
    "codecentric.de",
    "codecentric.com",
    "devdriday.net",
    "example.com",
    "onlineshoppingmania.de",
)
SEED_CATEGORIES = (
    "essential",
    "web_performance_and_analytics",
    "functional",
    "personalization",
    "marketing",
)
SEED_SERVICES = tuple(f"{category}-{n}" for category in SEED_CATEGORIES for n in range(1, 6))


def seed_request(rng: random.Random) -> dict[str, object]:
    """One request as the seed's generator builds it (the subset may be empty)."""
    return {
        "user": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "domain": rng.choice(SEED_DOMAINS),
        "services": rng.sample(SEED_SERVICES, rng.randrange(len(SEED_SERVICES))),
    }


def request_lines(count: int, seed: int) -> Iterator[str]:
    """`count` request-file lines (no newline), reproducible for a seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield json.dumps(seed_request(rng))


def write_request_files(directory: Path, count: int, files: int, seed: int) -> list[Path]:
    """`count` lines spread over `files` files `requests-<i>.jsonl` (like the seed's 4 x 500k)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"requests-{index}.jsonl" for index in range(files)]
    lines = request_lines(count, seed)
    per_file, extra = divmod(count, files)
    for index, path in enumerate(paths):
        with path.open("w", encoding="utf-8") as out:
            for _ in range(per_file + (1 if index < extra else 0)):
                out.write(next(lines) + "\n")
    return paths


def endpoint_timestamp(moment: datetime) -> str:
    """The Cloud Functions event timestamp as the seed's function copied it: ms and `Z`."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def stamp(line: str, moment: datetime) -> str:
    """What `scale_endpoint` published for a request line: the same JSON plus its stamp."""
    request = json.loads(line)
    request["message_timestamp"] = endpoint_timestamp(moment)
    return json.dumps(request)
