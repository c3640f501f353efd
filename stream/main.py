"""Entry point: `python -m stream.main --streaming [beam and ingestion flags]`."""

import sys

from stream.launch.launcher import run


def main() -> None:
    """Run the pipeline with the command-line flags; exit with its status."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
