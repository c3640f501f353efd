# Bucket for Dataflow temp/staging files and flex template specs, and the Docker repository for
# the image that is both the flex template launcher and the workers' SDK container.

resource "google_storage_bucket" "dataflow" {
  name     = local.bucket_name
  location = var.region # same region as the job: no cross-region egress for staging reads
  labels   = var.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.bucket_force_destroy

  # Temp files are rewritten constantly and worthless once deleted: soft delete would only bill
  # for them for another week.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  # gs://<bucket>/tmp is the job's temp_location. staging/ (what running workers download when
  # they start) and templates/ (specs to roll back to) are kept.
  lifecycle_rule {
    condition {
      age            = var.tmp_retention_days
      matches_prefix = ["tmp/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.artifact_repository_id
  format        = "DOCKER"
  description   = "Dataflow flex template and SDK container images of stream-ingest"
  labels        = var.labels

  depends_on = [google_project_service.apis]
}
