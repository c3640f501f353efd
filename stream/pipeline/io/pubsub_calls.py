"""How this code calls Pub/Sub: which errors pass, how calls are retried, request-sized chunks."""

from collections.abc import Iterator, Sequence
from typing import TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

T = TypeVar("T")

# Transient for every Pub/Sub call this code makes (Pull, Acknowledge, ModifyAckDeadline,
# Publish): the codes the Pub/Sub client retries for its own publish and streaming pull.
TRANSIENT_PUBSUB_ERRORS: tuple[type[Exception], ...] = (
    gexc.Aborted,
    gexc.Cancelled,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.Unknown,
)
# A topic or subscription that is not there, or that we may not use, is configuration, not a
# passing fault: no retry fixes it.
REFUSED_PUBSUB_ERRORS: tuple[type[Exception], ...] = (
    gexc.NotFound,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
)
# Everything a call with a retry can raise for Pub/Sub's sake (not a bug of ours).
PUBSUB_CALL_ERRORS: tuple[type[Exception], ...] = (gexc.GoogleAPICallError, gexc.RetryError)
ACK_IDS_PER_REQUEST = 1000  # as the Pub/Sub client's own dispatcher batches them


def pubsub_retry(timeout: float, maximum: float = 5.0) -> Retry:
    """api-core's retry (exponential backoff, full jitter) on transient Pub/Sub errors."""
    return Retry(
        predicate=if_exception_type(*TRANSIENT_PUBSUB_ERRORS),
        initial=0.1,
        maximum=maximum,
        multiplier=2.0,
        timeout=timeout,
    )


def ack_id_chunks(ack_ids: Sequence[T], size: int = ACK_IDS_PER_REQUEST) -> Iterator[Sequence[T]]:
    """`ack_ids` in slices of at most `size`: one Acknowledge or ModifyAckDeadline each."""
    for start in range(0, len(ack_ids), size):
        yield ack_ids[start : start + size]
