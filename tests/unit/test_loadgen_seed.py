"""`loadgen seed-files`: the seed generator's exact lines; `stamp`: scale_endpoint's step."""

import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from loadgen.__main__ import main
from loadgen.seed import request_lines, stamp, write_request_files

SEED_CATALOG = Path(__file__).parents[1] / "fixtures" / "seed-service-catalog.txt"
SEED_IDS = set(SEED_CATALOG.read_text().split("\n")[1:-1])
DOMAINS = {"codecentric.de", "codecentric.com", "devdriday.net", "example.com",
           "onlineshoppingmania.de"}  # fmt: skip
# json.dumps with its default separators, keys in the generator's order, no timestamp.
LINE = re.compile(
    r'^\{"user": "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", '
    r'"domain": "[a-z.]+", "services": \[("[a-z_]+-[1-5]"(, "[a-z_]+-[1-5]")*)?\]\}$'
)


def test_lines_have_the_seed_generators_exact_format() -> None:
    lines = list(request_lines(5000, seed=1))
    assert all(LINE.match(line) for line in lines), next(x for x in lines if not LINE.match(x))
    requests = [json.loads(line) for line in lines]
    assert {r["domain"] for r in requests} == DOMAINS
    assert set().union(*(r["services"] for r in requests)) == SEED_IDS
    sizes = Counter(len(r["services"]) for r in requests)
    # random.randrange(25): every size from 0 to 24, about equally often
    assert set(sizes) == set(range(25))
    assert all(150 < n < 260 for n in sizes.values()), sizes
    assert all(len(set(r["services"])) == len(r["services"]) for r in requests)
    assert all(uuid.UUID(r["user"]).version == 4 for r in requests)
    assert len({r["user"] for r in requests}) == 5000


def test_lines_are_reproducible_for_a_seed() -> None:
    assert list(request_lines(100, seed=7)) == list(request_lines(100, seed=7))
    assert list(request_lines(100, seed=7)) != list(request_lines(100, seed=8))


def test_files_split_the_count_like_the_seeds_four_files(tmp_path: Path) -> None:
    paths = write_request_files(tmp_path / "out", count=10, files=4, seed=3)
    assert [p.name for p in paths] == [f"requests-{i}.jsonl" for i in range(4)]
    counts = [len(p.read_text().splitlines()) for p in paths]
    assert counts == [3, 3, 2, 2]
    every = [line for p in paths for line in p.read_text().splitlines()]
    assert every == list(request_lines(10, seed=3))  # the same lines, in order


def test_the_command_writes_the_files(tmp_path: Path) -> None:
    assert main(["seed-files", "--count", "7", "--files", "2", "--out", str(tmp_path)]) == 0
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("requests-*.jsonl")) == 7


def test_stamp_adds_the_cloud_functions_timestamp_as_the_seed_function_did() -> None:
    line = '{"user": "u", "domain": "example.com", "services": ["essential-1"]}'
    moment = datetime(2021, 3, 5, 11, 20, 30, 123_999, tzinfo=timezone(timedelta(hours=1)))
    assert stamp(line, moment) == (
        '{"user": "u", "domain": "example.com", "services": ["essential-1"], '
        '"message_timestamp": "2021-03-05T10:20:30.123Z"}'
    )
    assert stamp(line, datetime(2021, 3, 5, tzinfo=UTC)).endswith('"2021-03-05T00:00:00.000Z"}')
