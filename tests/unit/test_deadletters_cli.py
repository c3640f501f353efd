"""The dead-letter CLI's target and flags: the emulator by default, real Pub/Sub only by name."""

from datetime import UTC, datetime

import pytest

from stream.deadletters.cli import (
    EXIT_INVALID,
    CommandError,
    main,
    parse_args,
    selection,
    target_project,
)


def test_the_emulator_means_the_local_project() -> None:
    assert target_project(None, {"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}) == "local-project"


def test_an_explicit_project_is_used_as_given() -> None:
    assert target_project("my-project", {}) == "my-project"


def test_without_the_emulator_the_local_default_is_refused() -> None:
    with pytest.raises(CommandError, match="PUBSUB_EMULATOR_HOST is not set") as raised:
        target_project(None, {})
    assert raised.value.code == EXIT_INVALID


def test_main_refuses_with_exit_code_2_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    assert main(["summary"]) == 2
    assert "pass --project explicitly" in capsys.readouterr().err


def test_selection_flags() -> None:
    args = parse_args(
        [
            "redrive",
            "--kind",
            "unknown_service",
            "--kind",
            "missing_field",
            "--stage",
            "parse",
            "--error-contains",
            "marketing-6",
            "--published-after",
            "2026-11-24T07:00:00+01:00",
            "--published-before",
            "2026-11-24T07:00:00Z",
            "--max_redrives",
            "2",
            "--limit",
            "10",
        ]
    )
    chosen = selection(args)
    assert chosen.kinds == {"unknown_service", "missing_field"}
    assert chosen.stages == {"parse"}
    assert chosen.schemas == frozenset()
    assert chosen.error_contains == "marketing-6"
    assert chosen.published_after == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert chosen.published_before == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert (args.max_redrives, args.limit, args.dry_run, args.drop_exhausted) == (
        2,
        10,
        False,
        False,
    )
    assert parse_args(["redrive", "--max-redrives", "5"]).max_redrives == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["redrive", "--published-after", "2026-11-24T07:00:00"],  # no offset: a guess
        ["redrive", "--published-after", "yesterday"],
        ["redrive", "--limit", "-1"],
        ["summary", "--timeout", "0"],
        ["export"],  # --to is required
    ],
    ids=["no-offset", "not-a-time", "negative-limit", "zero-timeout", "export-without-to"],
)
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args(argv)
    assert raised.value.code == 2
