"""How this code calls Pub/Sub: which errors pass, how calls are retried, request-sized chunks."""

from collections.abc import Iterator, Sequence
from typing import TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

from stream.pipeline.refused import RefusedError

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
# A topic or subscription that is not there (deleted), that we may not use, or that cannot
# serve the call in its state (its topic deleted, detached): configuration, not a passing
# fault. No retry or restart fixes it: the job stops and says what to change.
REFUSED_PUBSUB_ERRORS: tuple[type[Exception], ...] = (
    gexc.NotFound,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.FailedPrecondition,
)
# Everything a call with a retry can raise for Pub/Sub's sake (not a bug of ours).
PUBSUB_CALL_ERRORS: tuple[type[Exception], ...] = (gexc.GoogleAPICallError, gexc.RetryError)
ACK_IDS_PER_REQUEST = 1000
SUBSCRIBER_ROLE = "roles/pubsub.subscriber"  # pull, acknowledge, modifyAckDeadline
PUBLISHER_ROLE = "roles/pubsub.publisher"  # as the Pub/Sub client's own dispatcher batches them


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


def refused_by_pubsub(exc: Exception, call: str, resource: str, role: str) -> RefusedError:
    """The RefusedError of a call Pub/Sub refused for good: what happened and what to change.

    `call` reads as "pull from", "acknowledge on", ...; `role` is the one the call needs.
    """
    reason = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, gexc.NotFound):
        return RefusedError(
            f"Pub/Sub cannot {call} {resource}: it does not exist ({reason})",
            f"Create {resource} again (infra/terraform, or gcloud pubsub), then start the job",
        )
    if isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated):
        return RefusedError(
            f"Pub/Sub does not let this job {call} {resource} ({reason})",
            f"Grant the job's service account {role} on {resource}, then start the job",
        )
    return RefusedError(
        f"Pub/Sub refuses to {call} {resource} in its present state ({reason})",
        "Check it (gcloud pubsub ... describe: a deleted topic, a detached subscription) and "
        "recreate it, then start the job",
    )
