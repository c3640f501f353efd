# Bigtable instance, the three tables, and one GC rule (max 1 version) per column family.
#
# Families must match schemas/*.py (TableSpec.families): the pipeline checks them at startup
# outside Dataflow and fails rows that name a missing family.

resource "google_bigtable_instance" "main" {
  name                = var.bigtable_instance_name
  display_name        = "stream-ingest"
  deletion_protection = var.bigtable_deletion_protection
  labels              = var.labels

  # One cluster: no replication, so the default app profile's single-cluster routing gives
  # read-your-writes consistency and GC policies stay deletable.
  cluster {
    cluster_id   = var.bigtable_cluster_id
    zone         = var.bigtable_zone
    storage_type = var.bigtable_storage_type
    # Either a fixed size or autoscaling, never both (the provider ignores num_nodes then).
    num_nodes = var.bigtable_autoscaling == null ? var.bigtable_num_nodes : null

    dynamic "autoscaling_config" {
      for_each = var.bigtable_autoscaling == null ? [] : [var.bigtable_autoscaling]
      content {
        min_nodes      = autoscaling_config.value.min_nodes
        max_nodes      = autoscaling_config.value.max_nodes
        cpu_target     = autoscaling_config.value.cpu_target
        storage_target = autoscaling_config.value.storage_target
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_bigtable_table" "consent" {
  name                = var.consent_table_id
  instance_name       = google_bigtable_instance.main.name
  deletion_protection = local.table_deletion_protection

  column_family {
    family = "cf1"
  }
}

resource "google_bigtable_table" "telemetry" {
  name                = var.telemetry_table_id
  instance_name       = google_bigtable_instance.main.name
  deletion_protection = local.table_deletion_protection

  column_family {
    family = "r" # readings
  }
  column_family {
    family = "m" # device metadata
  }
}

# Per key, per window aggregates written by the rollups stage (stream/transforms/rollup.py):
# family consent for per-domain rows, telemetry for per-device rows. A late firing rewrites the
# window's row with the same cell timestamp (the window end), so one version is the whole truth.
resource "google_bigtable_table" "rollups" {
  name                = var.rollups_table_id
  instance_name       = google_bigtable_instance.main.name
  deletion_protection = local.table_deletion_protection

  column_family {
    family = "consent"
  }
  column_family {
    family = "telemetry"
  }
}

# The tables of schema plugins (README, "Your own message types"): `python -m stream.schemas
# --json` lists each registered schema's default table id and families.
resource "google_bigtable_table" "extra" {
  for_each = var.extra_tables

  name                = each.key
  instance_name       = google_bigtable_instance.main.name
  deletion_protection = local.table_deletion_protection

  dynamic "column_family" {
    for_each = toset(each.value)
    content {
      family = column_family.value
    }
  }
}

locals {
  table_deletion_protection = var.bigtable_deletion_protection ? "PROTECTED" : "UNPROTECTED"

  # Keep only the newest version of each cell. The pipeline writes every cell with the event time
  # as its timestamp, so a redelivered or retried message rewrites the same version instead of
  # adding one, and a newer event for the same row/column supersedes the older one.
  gc_rule_max_one_version = jsonencode({ rules = [{ max_version = 1 }] })

  # Every family of every table above; tests/unit/test_infra.py checks none is missing.
  column_families = {
    "consent/cf1"       = { table = google_bigtable_table.consent.name, family = "cf1" }
    "telemetry/r"       = { table = google_bigtable_table.telemetry.name, family = "r" }
    "telemetry/m"       = { table = google_bigtable_table.telemetry.name, family = "m" }
    "rollups/consent"   = { table = google_bigtable_table.rollups.name, family = "consent" }
    "rollups/telemetry" = { table = google_bigtable_table.rollups.name, family = "telemetry" }
  }

  # Every family of the plugins' tables (var.extra_tables), keyed "<table id>/<family>".
  extra_column_families = {
    for pair in flatten([
      for table, families in var.extra_tables : [
        for family in families : { table = table, family = family }
      ]
    ]) : "${pair.table}/${pair.family}" => pair
  }
}

# In the current provider a table's column_family block only names the family (and an optional
# aggregate type); garbage collection is a separate resource. Its gc_rules JSON form is the one
# the provider documents today: the older max_version/max_age blocks have known drift issues.
resource "google_bigtable_gc_policy" "max_one_version" {
  for_each = local.column_families

  instance_name = google_bigtable_instance.main.name
  table         = each.value.table
  column_family = each.value.family
  gc_rules      = local.gc_rule_max_one_version

  # Deleting a GC policy means "never collect", which Bigtable refuses on replicated tables;
  # abandoning it on destroy keeps `terraform destroy` working if a second cluster is added.
  deletion_policy = "ABANDON"
}

# The same rule for every family of the plugins' tables.
resource "google_bigtable_gc_policy" "extra_max_one_version" {
  for_each = local.extra_column_families

  instance_name   = google_bigtable_instance.main.name
  table           = google_bigtable_table.extra[each.value.table].name
  column_family   = each.value.family
  gc_rules        = local.gc_rule_max_one_version
  deletion_policy = "ABANDON"
}
