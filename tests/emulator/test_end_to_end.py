"""End to end on the real emulators: every schema, every invalid kind, exact results."""

import hashlib
import os
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from loadgen.readback import Letter, Table, pull_letters, read_table, table_rows
from tests.helpers.corpus import Corpus, build_corpus, consent_v1
from tests.helpers.load import publish, wait_for
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def _run_until_stored(
    resources: TestResources, corpus: Corpus, log: Path, *flags: str
) -> tuple[dict[str, Table], list[Letter]]:
    """Publish the corpus, run the pipeline CLI until every row and letter is stored."""
    ids = publish(resources.topic, corpus.messages)
    assert len(ids) == len(corpus.messages)
    pipeline = PipelineProcess(resources.flags("--max_message_bytes=8192", *flags), log)
    groups = {row.table_group for row in corpus.rows}
    expected = {g: len(corpus.rows_in(g)) for g in groups}
    try:
        done = wait_for(
            lambda: all(
                table_rows(PROJECT, resources.instance, resources.table(g)) >= n
                for g, n in expected.items()
            ),
            timeout=120,
        )
        assert done, f"rows did not arrive; pipeline log:\n{pipeline.log()[-4000:]}"
        letters = pull_letters(resources.dead_letter_subscription, len(corpus.letters), timeout=60)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log()[-4000:]
    tables = {g: read_table(PROJECT, resources.instance, resources.table(g)) for g in groups}
    return tables, letters


def _assert_rows_exact(corpus: Corpus, tables: dict[str, Table]) -> None:
    for group, table in tables.items():
        expected = corpus.rows_in(group)
        assert set(table) == set(expected), f"{group}: row keys differ"
        for key, row in expected.items():
            stored = table[key]
            assert set(stored) == set(row.cells), f"{key}: columns differ"
            for column, value in row.cells.items():
                versions = stored[column]
                assert len(versions) == 1, f"{key} {column}: {len(versions)} versions"
                assert versions[0] == (row.timestamp_micros, value), f"{key} {column}"


@pytest.mark.parametrize("runner", ["default", "BundleBasedDirectRunner"])
def test_every_schema_and_every_invalid_kind(
    resources: TestResources, log_dir: Path, runner: str
) -> None:
    corpus = build_corpus(datetime.now(UTC), valid_per_schema=20 if runner == "default" else 5)
    flags = [] if runner == "default" else [f"--runner={runner}"]
    tables, letters = _run_until_stored(resources, corpus, log_dir / "pipeline.log", *flags)

    _assert_rows_exact(corpus, tables)
    assert sum(len(t) for t in tables.values()) == len(corpus.rows)

    kinds = Counter(letter.attributes["deadletter_kind"] for letter in letters)
    assert kinds == Counter(letter.kind for letter in corpus.letters)
    sent = {hashlib.sha256(data).hexdigest(): attrs for data, attrs in corpus.messages}
    for letter in letters:
        # Raw bytes are kept exactly, original attributes are kept, the reason is precise.
        original = sent[hashlib.sha256(letter.data).hexdigest()]
        assert original.items() <= letter.attributes.items()
        assert letter.attributes["deadletter_stage"] == "parse"
        assert letter.attributes["deadletter_message_id"]
        assert letter.attributes["deadletter_error"]


def test_cbt_reads_the_seed_row(resources: TestResources, log_dir: Path) -> None:
    """The seed's message appears as row domain#user in the consent table, read with cbt."""
    corpus = Corpus()
    user = "0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11"
    data, row = consent_v1(
        uuid.UUID(user), "example.com", ["essential-1", "marketing-5"], datetime.now(UTC)
    )
    corpus.valid(data, {}, row)
    _run_until_stored(resources, corpus, log_dir / "pipeline.log")
    out = subprocess.run(
        [
            "cbt",
            f"-project={PROJECT}",
            f"-instance={resources.instance}",
            "read",
            resources.table("consent"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
        timeout=60,
    ).stdout
    assert f"example.com#{user}" in out
    assert '"[\\"essential-1\\",\\"marketing-5\\"]"' in out  # cbt quotes values
