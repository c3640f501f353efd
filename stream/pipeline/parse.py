"""ParseAndValidate: raw messages -> `valid` typed events and `invalid` dead letters."""

from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.typehints.decorators import no_annotations

from stream.pipeline import metrics
from stream.pipeline.messages import DeadLetter, RawMessage, ValidEvent
from stream.pipeline.outputs import Parsed
from stream.pipeline.validate import ParseRules, validate

VALID = "valid"
INVALID = "invalid"


class _ValidateFn(beam.DoFn):
    """Validates each message; never raises for bad input (it becomes a DeadLetter)."""

    def __init__(self, rules: ParseRules) -> None:
        self._rules = rules
        self._read = metrics.counter(metrics.READ)
        self._valid = metrics.counter(metrics.VALID)
        self._invalid = metrics.counter(metrics.INVALID)
        self._by_kind = metrics.counters_by_kind(metrics.INVALID)

    @no_annotations  # Beam cannot read TaggedOutput unions; mypy can
    def process(self, raw: RawMessage) -> Iterator[ValidEvent | TaggedOutput]:
        self._read.inc()
        result = validate(raw, self._rules, datetime.now(UTC))
        if isinstance(result, DeadLetter):
            self._invalid.inc()
            self._by_kind[result.kind].inc()
            yield TaggedOutput(INVALID, result)
        else:
            self._valid.inc()
            yield result


class ParseAndValidate(beam.PTransform):
    """Decode and validate against the schema named by the message attribute.

    Returns Parsed(valid: ValidEvent, invalid: DeadLetter).
    """

    def __init__(self, rules: ParseRules) -> None:
        super().__init__()
        self._rules = rules

    @no_annotations
    def expand(self, messages: beam.PCollection) -> Parsed:
        outputs = messages | "Validate" >> beam.ParDo(_ValidateFn(self._rules)).with_outputs(
            INVALID, main=VALID
        )
        return Parsed(valid=outputs[VALID], invalid=outputs[INVALID])
