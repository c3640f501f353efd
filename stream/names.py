"""The product's default resource names (the seed's), and how Pub/Sub paths are spelled.

Imports nothing: the launcher, the local tooling, the lookup function and the load generator
all read their defaults here, and so does infra/terraform/variables.tf (by value, tested).
"""

LOCAL_PROJECT = "local-project"  # the emulators' project (Beam wants 6-30 characters)
LOCAL_TOPIC = "request_buffer"
LOCAL_SUBSCRIPTION = "request_buffer-sub"
LOCAL_DEAD_LETTER_TOPIC = "request_buffer-deadletter"
LOCAL_DEAD_LETTER_SUBSCRIPTION = "request_buffer-deadletter-sub"
LOCAL_INSTANCE = "scale-bigtable"
# The variables the Google clients read to talk to an emulator instead of Google Cloud.
PUBSUB_ENV = "PUBSUB_EMULATOR_HOST"
BIGTABLE_ENV = "BIGTABLE_EMULATOR_HOST"


def topic_path(project: str, topic: str) -> str:
    """`projects/<project>/topics/<topic>`."""
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    """`projects/<project>/subscriptions/<subscription>`."""
    return f"projects/{project}/subscriptions/{subscription}"
