"""The typed outputs of the stages that can fail: what went through, and what did not.

Like bytewax's `oks`/`errs` pairs: a stage never swallows a failure, it hands it on as a
second PCollection (of DeadLetters) that the pipeline routes to the dead-letter topic.
"""

from typing import NamedTuple

import apache_beam as beam


class Parsed(NamedTuple):
    """ParseAndValidate: `valid` ValidEvents, `invalid` DeadLetters."""

    valid: beam.PCollection
    invalid: beam.PCollection


class Writes(NamedTuple):
    """A write stage: `written` (Written, for acknowledgement), `rejected` DeadLetters."""

    written: beam.PCollection
    rejected: beam.PCollection


class RollupOutputs(NamedTuple):
    """Rollups: `rows` (RollupRow per fired pane), `too_late` DeadLetters (rows stored)."""

    rows: beam.PCollection
    too_late: beam.PCollection
