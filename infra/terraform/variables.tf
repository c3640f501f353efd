# Inputs. Defaults match the names the pipeline uses (stream/config.py, schemas/registry.py), so
# a plain `terraform apply -var project_id=...` gives resources the flags' defaults point at.

variable "project_id" {
  description = "Google Cloud project id that holds every resource of the ingestion service."
  type        = string

  validation {
    # The pipeline rejects other project ids (stream/options.py PROJECT_RE).
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "A project id is 6-30 characters of [-a-z0-9], starting with a letter."
  }
}

variable "region" {
  description = "Region of the Dataflow job, the bucket and the image repository (keep them together)."
  type        = string
  default     = "europe-west1"
}

variable "labels" {
  description = "Labels added to every resource that supports them."
  type        = map(string)
  default = {
    app = "stream-ingest"
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs this service needs. Set false when a platform team manages them."
  type        = bool
  default     = true
}

# --- Pub/Sub ---------------------------------------------------------------------------------

variable "topic_name" {
  description = "Input topic the producers publish to."
  type        = string
  default     = "request_buffer"
}

variable "subscription_name" {
  description = "Subscription the pipeline reads (--subscription)."
  type        = string
  default     = "request_buffer-sub"
}

variable "dead_letter_topic_name" {
  description = "Dead-letter topic (--dead_letter_topic), also the subscription's dead_letter_policy target."
  type        = string
  default     = "request_buffer-deadletter"
}

variable "dead_letter_subscription_name" {
  description = "Subscription on the dead-letter topic that keeps dead letters for inspection and replay."
  type        = string
  default     = "request_buffer-deadletter-sub"
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the input subscription; at least 2 x --write_timeout_seconds + 10 (130 for the default 60 s)."
  type        = number
  default     = 130

  validation {
    # stream/resources.py required_ack_deadline(): 2 * 60 + 10. Pub/Sub allows at most 600.
    condition     = var.ack_deadline_seconds >= 130 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 130 (2 x 60 s write timeout + 10 s) and 600."
  }
}

variable "message_retention_duration" {
  description = "How long both subscriptions keep unacknowledged messages (7 days = the pipeline's --max_event_age_seconds default)."
  type        = string
  default     = "604800s"
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before Pub/Sub forwards it to the dead-letter topic (Pub/Sub allows 5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest redelivery delay after a nack or an expired ack deadline."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Longest redelivery delay (Pub/Sub allows at most 600s)."
  type        = string
  default     = "600s"
}

# --- Bigtable --------------------------------------------------------------------------------

variable "bigtable_instance_name" {
  description = "Bigtable instance id (--bigtable_instance)."
  type        = string
  default     = "scale-bigtable"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,31}[a-z0-9]$", var.bigtable_instance_name))
    error_message = "An instance id is 6-33 characters of [-a-z0-9], starting with a letter."
  }
}

variable "bigtable_cluster_id" {
  description = "Id of the instance's single cluster. Changing it (or zone, storage type) recreates the instance."
  type        = string
  default     = "scale-bigtable-c1"
}

variable "bigtable_zone" {
  description = "Zone of the Bigtable cluster; pick one in var.region so workers and tablets are close."
  type        = string
  default     = "europe-west1-b"
}

variable "bigtable_storage_type" {
  description = "SSD (low-latency writes, the default) or HDD."
  type        = string
  default     = "SSD"

  validation {
    condition     = contains(["SSD", "HDD"], var.bigtable_storage_type)
    error_message = "bigtable_storage_type must be SSD or HDD."
  }
}

variable "bigtable_num_nodes" {
  description = "Fixed node count, used when bigtable_autoscaling is null."
  type        = number
  default     = 1

  validation {
    condition     = var.bigtable_num_nodes >= 1
    error_message = "A production cluster has at least one node."
  }
}

variable "bigtable_autoscaling" {
  description = "Cluster autoscaling (null = fixed bigtable_num_nodes). cpu_target 10-80 %; storage_target in GiB per node (null = service default)."
  type = object({
    min_nodes      = number
    max_nodes      = number
    cpu_target     = number
    storage_target = optional(number)
  })
  default = null

  validation {
    condition = var.bigtable_autoscaling == null ? true : (
      var.bigtable_autoscaling.min_nodes >= 1 &&
      var.bigtable_autoscaling.max_nodes >= var.bigtable_autoscaling.min_nodes &&
      var.bigtable_autoscaling.cpu_target >= 10 && var.bigtable_autoscaling.cpu_target <= 80
    )
    error_message = "Autoscaling needs 1 <= min_nodes <= max_nodes and 10 <= cpu_target <= 80."
  }
}

variable "bigtable_deletion_protection" {
  description = "Refuse to destroy the Bigtable instance and tables (set false and apply before a planned teardown)."
  type        = bool
  default     = true
}

variable "consent_table_id" {
  description = "Table of consent events (--consent_table), family cf1."
  type        = string
  default     = "scale-traffic"
}

variable "telemetry_table_id" {
  description = "Table of telemetry events (--telemetry_table), families r (readings) and m (metadata)."
  type        = string
  default     = "telemetry"
}

variable "rollups_table_id" {
  description = "Table of per-window aggregates (families consent and telemetry)."
  type        = string
  default     = "scale-rollups"
}

# --- Storage and images ----------------------------------------------------------------------

variable "bucket_name" {
  description = "Bucket for Dataflow temp/staging files and template specs (null = <project_id>-stream-ingest-dataflow)."
  type        = string
  default     = null
}

variable "tmp_retention_days" {
  description = "Objects under tmp/ (the job's temp_location) are deleted after this many days."
  type        = number
  default     = 7

  validation {
    condition     = var.tmp_retention_days >= 1
    error_message = "tmp_retention_days must be at least 1."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the bucket even when it still holds objects."
  type        = bool
  default     = false
}

variable "artifact_repository_id" {
  description = "Artifact Registry Docker repository for the flex-template / SDK container image."
  type        = string
  default     = "stream-ingest"
}

# --- Identities ------------------------------------------------------------------------------

variable "worker_service_account_id" {
  description = "Account id of the service account the Dataflow launcher and worker VMs run as."
  type        = string
  default     = "stream-ingest-worker"
}

variable "deployers" {
  description = "Principals (e.g. \"group:data-eng@example.com\", \"serviceAccount:ci@p.iam.gserviceaccount.com\") allowed to build the template and launch, update and drain the job as the worker service account."
  type        = list(string)
  default     = []
}
