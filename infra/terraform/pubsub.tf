# Input topic + subscription, dead-letter topic + a subscription that keeps dead letters.
#
# The input subscription has no dead_letter_policy and no retry_policy on purpose: Pub/Sub does
# not support either for subscriptions Dataflow reads ("Handling message failures"), and the
# pipeline handles failures itself: invalid or unwritable messages go to its own dead-letter
# topic with the reason, transient errors are retried in place, and a local job that fails gives
# its messages back at once (ack deadline 0), which a retry policy would delay and a
# dead_letter_policy would count as failed deliveries (README.md here, "Delivery settings").

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
  # until its row is written, or its dead letter is published, and only then acknowledges it;
  # its lease keeper extends the deadline while a write backs off. The start-up check still
  # asks for one write attempt and one dead-letter publish, each bounded by
  # --write_timeout_seconds (default 60 s), plus 10 s: 2 x 60 + 10 = 130 s
  # (stream/pipeline/config.py required_ack_deadline). Dataflow's native read extends
  # deadlines itself.
  ack_deadline_seconds = var.ack_deadline_seconds

  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false

  # Never expire: a subscription idle for 31 days (the default TTL) would be deleted with its
  # backlog, e.g. while the pipeline is stopped for maintenance.
  expiration_policy {
    ttl = ""
  }
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
