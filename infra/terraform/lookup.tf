# The consent lookup HTTP function (optional: lookup_enabled): a gen2 Cloud Function that answers
# `GET ?domain=&user=` with one row of the consent table (stream/lookup/http.py). Its source is
# the zip `make lookup-bundle` writes (infra/lookup/bundle.py). It runs as its own service
# account, which may only read the consent table, and only lookup_invokers may call it.

locals {
  lookup_count = var.lookup_enabled ? 1 : 0
}

resource "google_service_account" "lookup" {
  count = local.lookup_count

  account_id   = var.lookup_service_account_id
  display_name = "stream-ingest consent lookup"
  description  = "Runs the consent lookup function; reads the consent table and nothing else."

  depends_on = [google_project_service.apis]
}

# Read rows of the consent table only: no other table, no writes, no admin. Table-level IAM, so
# the telemetry and rollups tables in the same instance stay out of reach.
resource "google_bigtable_table_iam_member" "lookup_reads_consent" {
  count = local.lookup_count

  instance_name = google_bigtable_instance.main.name
  table         = google_bigtable_table.consent.name
  role          = "roles/bigtable.reader"
  member        = "serviceAccount:${google_service_account.lookup[0].email}"
}

# The source zip, in the existing bucket under lookup/ (the tmp/ lifecycle rule does not touch
# it). Named by its content: a new bundle is a new object, and a new object redeploys the function.
resource "google_storage_bucket_object" "lookup_source" {
  count = local.lookup_count

  bucket = google_storage_bucket.dataflow.name
  name   = "lookup/consent-lookup-${var.lookup_source_zip == null ? "missing" : filemd5(var.lookup_source_zip)}.zip"
  source = var.lookup_source_zip

  lifecycle {
    precondition {
      condition     = var.lookup_source_zip != null
      error_message = "lookup_enabled needs lookup_source_zip: run `make lookup-bundle`, then pass -var=lookup_source_zip=../../.build/lookup.zip."
    }
  }
}

resource "google_cloudfunctions2_function" "lookup" {
  count = local.lookup_count

  name        = var.lookup_function_name
  location    = var.region
  description = "Consent lookup: GET ?domain=<d>&user=<uuid> -> the stored consent as JSON."
  labels      = var.labels

  build_config {
    runtime     = "python311"
    entry_point = "lookup_consent"
    source {
      storage_source {
        bucket = google_storage_bucket.dataflow.name
        object = google_storage_bucket_object.lookup_source[0].name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.lookup[0].email
    # Network reachability only; every request still needs an identity token of an invoker.
    ingress_settings               = var.lookup_ingress_settings
    max_instance_count             = var.lookup_max_instances
    available_memory               = "256M"
    timeout_seconds                = 30 # the function bounds its Bigtable read to 10 s
    all_traffic_on_latest_revision = true

    # Read at the first request (stream/lookup/http.py PROJECT_ENV, INSTANCE_ENV, TABLE_ENV).
    environment_variables = {
      LOOKUP_PROJECT  = var.project_id
      LOOKUP_INSTANCE = google_bigtable_instance.main.name
      LOOKUP_TABLE    = google_bigtable_table.consent.name
    }
  }

  depends_on = [
    google_project_service.apis,
    google_bigtable_table_iam_member.lookup_reads_consent,
  ]
}

# Gen2 functions are Cloud Run services, and roles/run.invoker is granted on the service (the
# function's own IAM rejects that role: hashicorp/terraform-provider-google#12562, #21674).
# service_config.service is the service's full name, projects/<p>/locations/<l>/services/<s>.
resource "google_cloud_run_v2_service_iam_member" "lookup_invokers" {
  for_each = var.lookup_enabled ? toset(var.lookup_invokers) : toset([])

  project  = var.project_id
  location = google_cloudfunctions2_function.lookup[0].location
  name     = google_cloudfunctions2_function.lookup[0].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
