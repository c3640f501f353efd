# Values the Dataflow build and run commands take (infra/dataflow/flex.mk reads them with
# `terraform output -raw NAME`).

output "project_id" {
  description = "Project of every resource (--project, --bigtable_project)."
  value       = var.project_id
}

output "region" {
  description = "Region for the Dataflow job (--region)."
  value       = var.region
}

output "topic_path" {
  description = "Input topic producers publish to: projects/<p>/topics/<t>."
  value       = google_pubsub_topic.input.id
}

output "subscription_path" {
  description = "--subscription: projects/<p>/subscriptions/<s>."
  value       = google_pubsub_subscription.input.id
}

output "dead_letter_topic_path" {
  description = "--dead_letter_topic: projects/<p>/topics/<t>."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription_path" {
  description = "Subscription that keeps dead letters: projects/<p>/subscriptions/<s>."
  value       = google_pubsub_subscription.dead_letter.id
}

output "bigtable_instance_id" {
  description = "--bigtable_instance."
  value       = google_bigtable_instance.main.name
}

output "consent_table_id" {
  description = "--consent_table."
  value       = google_bigtable_table.consent.name
}

output "telemetry_table_id" {
  description = "--telemetry_table."
  value       = google_bigtable_table.telemetry.name
}

output "rollups_table_id" {
  description = "Per-window aggregates table (the rollups stage)."
  value       = google_bigtable_table.rollups.name
}

output "bigtable_table_ids" {
  description = "Every table id by logical group."
  value = {
    consent   = google_bigtable_table.consent.name
    telemetry = google_bigtable_table.telemetry.name
    rollups   = google_bigtable_table.rollups.name
  }
}

output "extra_table_ids" {
  description = "The schema plugins' tables (var.extra_tables): pass each as --<group>_table."
  value       = [for table in google_bigtable_table.extra : table.name]
}

output "bucket_name" {
  description = "Bucket for Dataflow files and flex template specs."
  value       = google_storage_bucket.dataflow.name
}

output "temp_location" {
  description = "--temp_location (objects expire after tmp_retention_days)."
  value       = "gs://${google_storage_bucket.dataflow.name}/tmp"
}

output "staging_location" {
  description = "--staging_location."
  value       = "gs://${google_storage_bucket.dataflow.name}/staging"
}

output "template_prefix" {
  description = "Where flex template specs are written: gs://<bucket>/templates."
  value       = "gs://${google_storage_bucket.dataflow.name}/templates"
}

output "image_repository" {
  description = "Docker repository for the template image: <region>-docker.pkg.dev/<project>/<repo>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "service_account_email" {
  description = "--service_account_email of the launcher and workers."
  value       = google_service_account.worker.email
}

output "lookup_uri" {
  description = "HTTPS URL of the consent lookup function (null unless lookup_enabled); call it with an identity token."
  value       = one(google_cloudfunctions2_function.lookup[*].service_config[0].uri)
}

output "lookup_service_account_email" {
  description = "Service account the lookup function runs as (null unless lookup_enabled); make lookup-deploy reads it."
  value       = one(google_service_account.lookup[*].email)
}
