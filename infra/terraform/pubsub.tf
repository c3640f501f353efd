# Input topic + subscription, dead-letter topic + a subscription that keeps dead letters, and the
# Pub/Sub service agent's grants that make the subscription's dead_letter_policy work.

resource "google_pubsub_topic" "input" {
  name   = var.topic_name
  labels = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  name   = var.dead_letter_topic_name
  labels = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "input" {
  name   = var.subscription_name
  topic  = google_pubsub_topic.input.id
  labels = var.labels

  # The pipeline's own pull source (Prism and other portable runners) holds a message from pull
  # until its row is written, or its dead letter is published, and only then acknowledges it.
  # Each of those two steps is bounded by --write_timeout_seconds (default 60 s), plus 10 s of
  # processing slack: 2 x 60 + 10 = 130 s (stream/resources.py required_ack_deadline, which also
  # refuses to start against a shorter deadline). A shorter deadline would let Pub/Sub redeliver
  # messages that are still being written. Dataflow's native read extends deadlines itself.
  ack_deadline_seconds = var.ack_deadline_seconds

  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false

  # Never expire: a subscription idle for 31 days (the default TTL) would be deleted with its
  # backlog, e.g. while the pipeline is stopped for maintenance.
  expiration_policy {
    ttl = ""
  }

  # Messages that keep failing delivery (crash loops, poison messages the pipeline cannot even
  # dead-letter itself) are forwarded to the same dead-letter topic the pipeline publishes to.
  # Pub/Sub adds CloudPubSubDeadLetterSourceDeliveryCount; the pipeline's own dead letters carry
  # deadletter_* attributes instead, so both kinds can be told apart.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Exponential backoff instead of immediate redelivery after a nack or an expired deadline.
  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  # Forwarding needs the publisher grant on the dead-letter topic from the first message on.
  depends_on = [google_pubsub_topic_iam_member.service_agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "dead_letter" {
  name   = var.dead_letter_subscription_name
  topic  = google_pubsub_topic.dead_letter.id
  labels = var.labels

  # Messages published to a topic without a subscription are lost: this one keeps dead letters
  # for inspection and replay for the full retention period.
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent publishes forwarded messages to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "service_agent_publishes_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

# ... and acknowledges them on the input subscription once they are forwarded.
resource "google_pubsub_subscription_iam_member" "service_agent_acks_forwarded" {
  subscription = google_pubsub_subscription.input.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
