# The worker service account and least-privilege grants, each on the single resource it needs.
#
# The Dataflow launcher VM (flex template) and the worker VMs both run as this account. The only
# project-level role is roles/dataflow.worker, which Dataflow cannot use at a finer scope; Pub/Sub,
# Bigtable, Storage and Artifact Registry access is granted on one resource each.

resource "google_service_account" "worker" {
  account_id   = var.worker_service_account_id
  display_name = "stream-ingest Dataflow worker"
  description  = "Runs the stream-ingest flex template launcher and Dataflow workers."

  depends_on = [google_project_service.apis]
}

# Lease and report work items, write worker logs and metrics, use Streaming Engine.
resource "google_project_iam_member" "worker_dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = local.worker_member
}

# Pull and acknowledge from the input subscription only (pubsub.subscriptions.consume).
resource "google_pubsub_subscription_iam_member" "worker_consumes_input" {
  subscription = google_pubsub_subscription.input.name
  role         = "roles/pubsub.subscriber"
  member       = local.worker_member
}

# roles/pubsub.subscriber lacks pubsub.subscriptions.get, which Dataflow's native Pub/Sub read
# uses to look up the subscription (its topic and default ack deadline); without it the job logs
# "Failed to retrieve default ack deadline for the subscription ... 403" (reported in
# mozilla/gcp-ingestion#384: Dataflow reads need both pubsub.subscriber and pubsub.viewer).
# Granted on the subscription only, not the project.
#
# Not granted on purpose: with --timestamp_attribute, Dataflow also creates a watermark
# "tracking" subscription on the topic, which needs pubsub.subscriptions.create on the project.
# The pipeline's default (event time from the payload, no timestamp attribute) does not.
resource "google_pubsub_subscription_iam_member" "worker_views_input" {
  subscription = google_pubsub_subscription.input.name
  role         = "roles/pubsub.viewer"
  member       = local.worker_member
}

# Publish dead letters (stream/io/pubsub.py PublishDeadLettersFn) to the dead-letter topic only.
resource "google_pubsub_topic_iam_member" "worker_publishes_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.worker_member
}

# Read and write rows (MutateRows) in this instance's tables only; no admin rights.
resource "google_bigtable_instance_iam_member" "worker_writes_rows" {
  instance = google_bigtable_instance.main.name
  role     = "roles/bigtable.user"
  member   = local.worker_member
}

# Temp and staging files, and the template spec the launcher reads, in this bucket only.
resource "google_storage_bucket_iam_member" "worker_uses_bucket" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectAdmin"
  member = local.worker_member
}

# The launcher VM and every worker pull the template/SDK container image from this repository.
resource "google_artifact_registry_repository_iam_member" "worker_pulls_images" {
  project    = google_artifact_registry_repository.images.project
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = local.worker_member
}

# --- Deployers: people or CI that build the template and launch/update/drain the job ---------

# Launching a job that runs as the worker account is acting as it.
resource "google_service_account_iam_member" "deployers_act_as_worker" {
  for_each = toset(var.deployers)

  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# Dataflow jobs have no finer IAM scope than the project.
resource "google_project_iam_member" "deployers_run_dataflow_jobs" {
  for_each = toset(var.deployers)

  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = each.value
}

resource "google_artifact_registry_repository_iam_member" "deployers_push_images" {
  for_each = toset(var.deployers)

  project    = google_artifact_registry_repository.images.project
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

# Upload template specs; stage files when launching.
resource "google_storage_bucket_iam_member" "deployers_write_templates" {
  for_each = toset(var.deployers)

  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectAdmin"
  member = each.value
}
