# Provider, locals and the APIs the service needs. The resources themselves are in
# pubsub.tf, bigtable.tf, storage.tf, iam.tf and (optional) lookup.tf.

provider "google" {
  project = var.project_id
  region  = var.region
}

locals {
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-stream-ingest-dataflow")

  worker_member = "serviceAccount:${google_service_account.worker.email}"

  apis = toset([
    "artifactregistry.googleapis.com",
    "bigtable.googleapis.com",
    "bigtableadmin.googleapis.com",
    "cloudbuild.googleapis.com",
    "compute.googleapis.com", # Dataflow worker VMs
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
  ])

  # Only with lookup_enabled (lookup.tf): gen2 functions are built by Cloud Build into an
  # Artifact Registry image and run as Cloud Run services.
  lookup_apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
  ])
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? setunion(local.apis, var.lookup_enabled ? local.lookup_apis : toset([])) : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may use the same APIs: never turn them off on destroy.
  disable_on_destroy = false
}
