"""Which table the lookup function reads, from its environment (stream/lookup/http.py)."""

import pytest

from stream.lookup.http import NotConfiguredError, Target, target_from


def test_refuses_without_a_project_outside_the_emulator() -> None:
    with pytest.raises(NotConfiguredError, match="set LOOKUP_PROJECT=<project id>"):
        target_from({"LOOKUP_INSTANCE": "i", "LOOKUP_TABLE": "t"})
    with pytest.raises(NotConfiguredError):
        target_from({"LOOKUP_PROJECT": "", "BIGTABLE_EMULATOR_HOST": ""})


def test_the_emulator_defaults_to_the_local_project_and_the_seed_names() -> None:
    target = target_from({"BIGTABLE_EMULATOR_HOST": "127.0.0.1:8086"})

    assert target == Target("local-project", "scale-bigtable", "scale-traffic", 10.0)


def test_explicit_settings_win() -> None:
    environ = {
        "LOOKUP_PROJECT": "my-project",
        "LOOKUP_INSTANCE": "inst",
        "LOOKUP_TABLE": "consent",
        "LOOKUP_TIMEOUT_SECONDS": "2.5",
        "BIGTABLE_EMULATOR_HOST": "127.0.0.1:8086",
    }

    assert target_from(environ) == Target("my-project", "inst", "consent", 2.5)


@pytest.mark.parametrize("timeout", ["0", "-1", "26", "ten", "nan", "inf"])
def test_the_read_timeout_is_bounded(timeout: str) -> None:
    environ = {"LOOKUP_PROJECT": "my-project", "LOOKUP_TIMEOUT_SECONDS": timeout}

    with pytest.raises(NotConfiguredError, match="LOOKUP_TIMEOUT_SECONDS"):
        target_from(environ)
