"""Flex template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): adapt the launcher's flags, run."""

import sys

from stream.launch.launcher import run

# The template launcher passes every parameter as `--name=value`, but these are argparse
# store_true switches, which reject a value: `--record_ingest_time=true` would exit with
# "ignored explicit argument". Translate true/false into the switch or its absence.
SWITCHES = frozenset({"record_ingest_time", "streaming"})
TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})


class FlexArgError(ValueError):
    """A switch parameter has a value other than true or false."""


def flex_argv(argv: list[str]) -> list[str]:
    """The pipeline's command line from the launcher's: streaming on, switches as bare flags."""
    out = ["--streaming"]  # a Pub/Sub pipeline is always streaming; the template cannot say so
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if not has_value or name.lstrip("-") not in SWITCHES:
            out.append(arg)
        elif value.lower() in TRUE:
            out.append(name)
        elif value.lower() not in FALSE:
            raise FlexArgError(f"{name}={value}: expected true or false")
    return out


def main() -> int:
    """Run the pipeline with the launcher's arguments; return the exit code."""
    try:
        argv = flex_argv(sys.argv[1:])
    except FlexArgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
