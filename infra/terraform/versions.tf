# Terraform and provider versions, and where the state lives.

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # gc_rules on google_bigtable_gc_policy, deletion_protection on google_bigtable_table and
      # soft_delete_policy on google_storage_bucket exist since 6.x; google_bigtable_table_iam_member
      # takes `instance_name` (lookup.tf) since 7.0, which removed `instance`. `terraform
      # validate` passed against 8.0.0 before lookup.tf was added.
      version = ">= 7.0, < 9.0"
    }
  }

  # Remote state in a GCS bucket that exists before this configuration (it cannot hold its own
  # state). Partial configuration: pass the bucket at init time, see README.md:
  #   terraform init -backend-config="bucket=<state-bucket>" -backend-config="prefix=stream-ingest"
  backend "gcs" {}
}
