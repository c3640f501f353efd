"""How the batch writer treats every gRPC status Bigtable can answer (batch_writer.py's table)."""

import grpc
import pytest
from google.api_core import exceptions as gexc

from stream.pipeline.io.batch_writer import is_permanent, is_refused

# Written from google.rpc.Code's meanings and the Bigtable clients' retry defaults, not
# from the code under test: transient = back off in place, permanent = dead-letter the row,
# refused = fail the bundle at once (no row is to blame, no retry can fix it).
HANDLING = {
    grpc.StatusCode.UNAVAILABLE: "transient",
    grpc.StatusCode.DEADLINE_EXCEEDED: "transient",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "transient",
    grpc.StatusCode.ABORTED: "transient",
    grpc.StatusCode.INTERNAL: "transient",
    grpc.StatusCode.UNKNOWN: "transient",
    grpc.StatusCode.CANCELLED: "transient",
    grpc.StatusCode.INVALID_ARGUMENT: "permanent",
    grpc.StatusCode.NOT_FOUND: "permanent",
    grpc.StatusCode.FAILED_PRECONDITION: "permanent",
    grpc.StatusCode.OUT_OF_RANGE: "permanent",
    grpc.StatusCode.ALREADY_EXISTS: "permanent",
    grpc.StatusCode.UNIMPLEMENTED: "permanent",
    grpc.StatusCode.DATA_LOSS: "permanent",
    grpc.StatusCode.PERMISSION_DENIED: "refused",
    grpc.StatusCode.UNAUTHENTICATED: "refused",
}


def handling(cause: BaseException | None) -> str:
    if is_refused(cause):
        return "refused"
    return "permanent" if is_permanent(cause) else "transient"


def test_the_table_covers_every_status_code() -> None:
    assert set(HANDLING) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def _name(code: grpc.StatusCode) -> str:
    return str(code.name)


@pytest.mark.parametrize("code", sorted(HANDLING, key=_name), ids=_name)
def test_an_entry_status_is_handled_by_its_code(code: grpc.StatusCode) -> None:
    # What the data client builds from an entry's status in a MutateRows response.
    cause = gexc.from_grpc_status(code, f"entry failed with {code.name}")
    assert cause.response is None
    assert handling(cause) == HANDLING[code]


def test_causes_without_a_status_are_transient() -> None:
    assert handling(None) == "transient"
    assert handling(RuntimeError("no response entry received")) == "transient"
    assert handling(gexc.RetryError("timed out", cause=None)) == "transient"
