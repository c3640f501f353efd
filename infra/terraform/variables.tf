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
  description = "Dead-letter topic the pipeline publishes invalid and unwritable messages to (--dead_letter_topic)."
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
    # stream/pipeline/config.py required_ack_deadline(): 2 * 60 + 10. Pub/Sub allows at most 600.
    condition     = var.ack_deadline_seconds >= 130 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 130 (2 x 60 s write timeout + 10 s) and 600."
  }
}

variable "message_retention_duration" {
  description = "How long both subscriptions keep unacknowledged messages (7 days = the pipeline's --max_event_age_seconds default)."
  type        = string
  default     = "604800s"
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

variable "extra_tables" {
  description = "Tables of schema plugins: table id => its column families (each keeps one version), e.g. { \"orders\" = [\"o\"] }. `python -m stream.schemas` lists them."
  type        = map(list(string))
  default     = {}

  validation {
    condition = alltrue([
      for table, families in var.extra_tables :
      can(regex("^[-_.a-zA-Z0-9]{1,50}$", table)) && length(families) > 0
    ])
    error_message = "Each extra table needs an id of 1-50 of [-_.a-zA-Z0-9] and at least one family."
  }
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

# --- Consent lookup function (lookup.tf) -----------------------------------------------------

variable "lookup_enabled" {
  description = "Deploy the consent lookup HTTP function (a gen2 Cloud Function reading the consent table)."
  type        = bool
  default     = false
}

variable "lookup_source_zip" {
  description = "Path of the function's source zip that `make lookup-bundle` writes (.build/lookup.zip); required when lookup_enabled."
  type        = string
  default     = null

  validation {
    condition     = var.lookup_source_zip == null ? true : fileexists(var.lookup_source_zip)
    error_message = "lookup_source_zip names no file: run `make lookup-bundle` and pass its .build/lookup.zip (relative to infra/terraform: ../../.build/lookup.zip)."
  }
}

variable "lookup_invokers" {
  description = "Principals allowed to call the lookup (roles/run.invoker on its Cloud Run service), e.g. \"serviceAccount:partner@p.iam.gserviceaccount.com\". Never public."
  type        = list(string)
  default     = []

  validation {
    # Consent records are personal data: the function answers named callers only.
    condition = alltrue([
      for member in var.lookup_invokers : !contains(["allusers", "allauthenticatedusers"], lower(member))
    ])
    error_message = "lookup_invokers must not contain allUsers or allAuthenticatedUsers: the lookup is never public."
  }

  validation {
    condition = alltrue([
      for member in var.lookup_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):[^ ,]+$", member))
    ])
    error_message = "Each lookup invoker is one principal: user:..., group:..., serviceAccount:..., domain:..., principal://... or principalSet://..."
  }
}

variable "lookup_function_name" {
  description = "Name of the lookup function (and of the Cloud Run service it runs as)."
  type        = string
  default     = "consent-lookup"
}

variable "lookup_service_account_id" {
  description = "Account id of the service account the lookup function runs as (reads the consent table only)."
  type        = string
  default     = "consent-lookup"
}

variable "lookup_max_instances" {
  description = "Upper bound on concurrent function instances (bounds cost and the read load on Bigtable)."
  type        = number
  default     = 10

  validation {
    condition     = var.lookup_max_instances >= 1 && var.lookup_max_instances <= 100
    error_message = "lookup_max_instances must be between 1 and 100."
  }
}

variable "lookup_ingress_settings" {
  description = "Who can reach the function's URL at the network level: ALLOW_ALL (third parties on the internet, still IAM-authenticated), ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.lookup_ingress_settings)
    error_message = "lookup_ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}
