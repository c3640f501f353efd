"""Infrastructure as code: Terraform scoping and layout, flex template metadata, image, launcher.

Everything is parsed from the files (python-hcl2 for Terraform) and checked against the code that
is the truth: IngestOptions for the flags, to_config for the accepted values, the schema registry
for tables and families, required_ack_deadline for the subscription.
"""

import argparse
import importlib.util
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

import hcl2
import pytest
import setuptools
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.registry import BUILT_IN, BUILT_IN_TABLES
from stream import names
from stream.launch import options as opts
from stream.launch.options import ConfigError, IngestOptions, to_config
from stream.lookup import http as lookup_http
from stream.pipeline.config import required_ack_deadline

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "terraform"
DATAFLOW = ROOT / "infra" / "dataflow"
PYPROJECT = ROOT / "pyproject.toml"

Block = dict[str, Any]

# --- Terraform -------------------------------------------------------------------------------


@cache
def terraform() -> dict[str, list[Block]]:
    """Every top-level block of infra/terraform/*.tf, merged by block type."""
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    merged: dict[str, list[Block]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            document = hcl2.load(handle, serialization_options=options)
        for kind, blocks in document.items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def _labelled(kind: str) -> dict[tuple[str, str], Block]:
    """`resource "type" "name" {}` (or data) blocks by (type, name)."""
    found: dict[tuple[str, str], Block] = {}
    for block in terraform().get(kind, []):
        for rtype, named in block.items():
            for name, body in named.items():
                assert (rtype, name) not in found, f"duplicate {kind} {rtype}.{name}"
                found[(rtype, name)] = body
    return found


def resources() -> dict[tuple[str, str], Block]:
    return _labelled("resource")


def resource(rtype: str, name: str) -> Block:
    found = resources()
    assert (rtype, name) in found, f"missing resource {rtype}.{name}"
    return found[(rtype, name)]


def variables() -> dict[str, Block]:
    return {name: body for block in terraform()["variable"] for name, body in block.items()}


def locals_() -> dict[str, Any]:
    return {name: value for block in terraform()["locals"] for name, value in block.items()}


REFERENCE = re.compile(r"\$\{(var|local)\.(\w+)\}")


def resolve(value: Any) -> Any:
    """Follow `${var.x}` (its default) and `${local.x}` until a value or another expression."""
    for _ in range(10):
        match = REFERENCE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            return value
        kind, name = match.groups()
        value = variables()[name].get("default") if kind == "var" else locals_()[name]
    raise AssertionError(f"reference loop at {value}")


def members(body: Block) -> list[str]:
    """The principals an IAM resource grants to (member, or members of a binding)."""
    if "member" in body:
        return [str(resolve(body["member"]))]
    return [str(resolve(m)) for m in body.get("members", [])]


def is_worker(member: str) -> bool:
    return "google_service_account.worker." in member


def worker_grants() -> Iterator[tuple[str, str, Block]]:
    """(resource type, role, body) of every IAM resource that grants to the worker account."""
    for (rtype, _name), body in resources().items():
        if "_iam_" in rtype and any(is_worker(m) for m in members(body)):
            yield rtype, str(resolve(body["role"])), body


def normalized(expression: Any) -> str:
    return re.sub(r"\s+", "", str(expression))


def test_subscription_ack_deadline_covers_the_pipelines_hold_time() -> None:
    subscription = resource("google_pubsub_subscription", "input")
    default_config = to_config(PipelineOptions(["--streaming"]))
    need = required_ack_deadline(default_config)  # 2 x 60 s write timeout + 10 s
    assert need == 130
    assert int(resolve(subscription["ack_deadline_seconds"])) >= need
    assert int(resolve(subscription["ack_deadline_seconds"])) <= 600  # Pub/Sub's maximum
    assert resolve(subscription["name"]) == names.LOCAL_SUBSCRIPTION
    assert subscription["topic"] == "${google_pubsub_topic.input.id}"
    assert resolve(resource("google_pubsub_topic", "input")["name"]) == names.LOCAL_TOPIC
    assert resolve(subscription["message_retention_duration"]) == "604800s"
    assert subscription["expiration_policy"] == [{"ttl": ""}]  # never deleted when idle


# Pub/Sub: "subscription retry policies and dead-letter policies are not supported for
# subscriptions that Dataflow reads"; and a local job's nacks on the way down would be
# delayed by one and counted as failed deliveries by the other (infra/terraform/README.md).
DELIVERY_POLICIES = {"retry_policy", "dead_letter_policy"}


def test_input_subscription_has_no_retry_or_dead_letter_policy() -> None:
    subscription = resource("google_pubsub_subscription", "input")
    assert not DELIVERY_POLICIES & set(subscription)
    assert set(subscription) == {
        "name",
        "topic",
        "labels",
        "ack_deadline_seconds",
        "message_retention_duration",
        "retain_acked_messages",
        "expiration_policy",
    }
    assert not {"max_delivery_attempts", "retry_minimum_backoff", "retry_maximum_backoff"} & set(
        variables()
    )


def test_the_pipelines_dead_letter_topic_is_kept() -> None:
    for (rtype, name), body in resources().items():
        if rtype == "google_pubsub_subscription":
            assert not DELIVERY_POLICIES & set(body), name
    topic = resource("google_pubsub_topic", "dead_letter")
    assert resolve(topic["name"]) == names.LOCAL_DEAD_LETTER_TOPIC
    # Messages published to a topic without subscriptions are lost: one must keep them.
    kept = resource("google_pubsub_subscription", "dead_letter")
    assert kept["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert resolve(kept["name"]) == names.LOCAL_DEAD_LETTER_SUBSCRIPTION
    assert resolve(kept["message_retention_duration"]) == "604800s"


def test_nothing_is_granted_to_the_pubsub_service_agent() -> None:
    """Forwarding to a dead-letter topic was its only use; no policy, no grant."""
    iam = [body for (rtype, _), body in resources().items() if "_iam_" in rtype]
    assert iam, "no IAM resources parsed"
    assert not [m for body in iam for m in members(body) if "gcp-sa-pubsub" in m]
    assert "pubsub_service_agent" not in locals_()
    assert ("google_project", "this") not in _labelled("data")  # only the agent needed it


# Every grant of the worker account: (type, role) -> (scoping attribute, the one resource).
WORKER_GRANTS = {
    ("google_project_iam_member", "roles/dataflow.worker"): ("project", "${var.project_id}"),
    ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber"): (
        "subscription",
        "${google_pubsub_subscription.input.name}",
    ),
    ("google_pubsub_subscription_iam_member", "roles/pubsub.viewer"): (
        "subscription",
        "${google_pubsub_subscription.input.name}",
    ),
    ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"): (
        "topic",
        "${google_pubsub_topic.dead_letter.name}",
    ),
    ("google_bigtable_instance_iam_member", "roles/bigtable.user"): (
        "instance",
        "${google_bigtable_instance.main.name}",
    ),
    ("google_storage_bucket_iam_member", "roles/storage.objectAdmin"): (
        "bucket",
        "${google_storage_bucket.dataflow.name}",
    ),
    ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.reader"): (
        "repository",
        "${google_artifact_registry_repository.images.name}",
    ),
}


def test_worker_grants_are_each_scoped_to_one_resource() -> None:
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for rtype, role, body in worker_grants():
        assert (rtype, role) not in found, f"{role} granted twice via {rtype}"
        assert (rtype, role) in WORKER_GRANTS, f"unexpected worker grant {rtype} {role}"
        attribute, _ = WORKER_GRANTS[(rtype, role)]
        found[(rtype, role)] = (attribute, body.get(attribute, "<missing>"))
        assert "for_each" not in body and "count" not in body, f"{rtype} {role} multiplied"
    assert found == WORKER_GRANTS


def test_worker_has_no_project_level_data_access() -> None:
    project_level = ("google_project_iam", "google_folder_iam", "google_organization_iam")
    for rtype, role, _body in worker_grants():
        if rtype.startswith(project_level):
            assert not re.search(r"pubsub|bigtable|storage|artifactregistry|owner|editor", role)
            assert role == "roles/dataflow.worker"
    # Authoritative policies built from data "google_iam_policy" blocks count too.
    for (dtype, name), body in _labelled("data").items():
        if dtype == "google_iam_policy":
            for binding in body.get("binding", []):
                assert not any(is_worker(m) for m in members(binding)), f"{name}: {binding}"


def test_worker_member_is_the_worker_service_account() -> None:
    assert resolve("${local.worker_member}") == (
        "serviceAccount:${google_service_account.worker.email}"
    )
    account = resource("google_service_account", "worker")
    assert resolve(account["account_id"]) == "stream-ingest-worker"


EXPECTED_TABLES = {
    **{spec.default_table_id: set(spec.families) for spec in BUILT_IN_TABLES.values()},
    "scale-rollups": {"consent", "telemetry"},  # per-window aggregates (the rollups stage)
}


def bigtable_tables() -> dict[str, tuple[str, set[str]]]:
    """Resource name -> (table id, families) of every google_bigtable_table."""
    return {
        name: (
            str(resolve(body["name"])),
            {family["family"] for family in body.get("column_family", [])},
        )
        for (rtype, name), body in resources().items()
        if rtype == "google_bigtable_table" and "for_each" not in body  # not var.extra_tables
    }


EXTRA_FAMILIES = "${local.extra_column_families}"  # the plugins' tables (one variable)


def gc_policies() -> list[tuple[str, str, str]]:
    """(table expression, family, gc_rules expression) of every GC policy, for_each expanded."""
    expanded = []
    for (rtype, _name), body in resources().items():
        if rtype != "google_bigtable_gc_policy" or body.get("for_each") == EXTRA_FAMILIES:
            continue
        rules = normalized(resolve(body.get("gc_rules")))
        if "for_each" in body:
            assert body["table"] == "${each.value.table}"
            assert body["column_family"] == "${each.value.family}"
            for item in resolve(body["for_each"]).values():
                expanded.append((item["table"], item["family"], rules))
        else:
            expanded.append((body["table"], body["column_family"], rules))
    return expanded


def test_tables_have_the_schema_families() -> None:
    instance = resource("google_bigtable_instance", "main")
    assert resolve(instance["name"]) == names.LOCAL_INSTANCE
    (cluster,) = instance["cluster"]
    assert resolve(cluster["storage_type"]) == "SSD"
    tables = bigtable_tables()
    by_id = {table_id: families for table_id, families in tables.values()}
    assert by_id == EXPECTED_TABLES
    for body in (resource("google_bigtable_table", name) for name in tables):
        assert body["instance_name"] == "${google_bigtable_instance.main.name}"


def test_plugin_tables_come_from_one_variable_and_keep_one_version() -> None:
    variable = variables()["extra_tables"]
    assert variable["type"] == "${map(list(string))}"
    assert resolve("${var.extra_tables}") == {}  # none unless a deployment lists its plugins
    table = resource("google_bigtable_table", "extra")
    assert table["for_each"] == "${var.extra_tables}"
    assert table["name"] == "${each.key}"
    assert table["instance_name"] == "${google_bigtable_instance.main.name}"
    assert table["deletion_protection"] == "${local.table_deletion_protection}"
    (dynamic,) = table["dynamic"]
    assert dynamic["column_family"]["for_each"] == "${toset(each.value)}"
    assert dynamic["column_family"]["content"] == [{"family": "${column_family.value}"}]
    policy = resource("google_bigtable_gc_policy", "extra_max_one_version")
    assert policy["for_each"] == EXTRA_FAMILIES
    assert policy["table"] == "${google_bigtable_table.extra[each.value.table].name}"
    assert policy["column_family"] == "${each.value.family}"
    assert policy["gc_rules"] == "${local.gc_rule_max_one_version}"
    # One entry per (table, family) of the variable: the comprehension, whitespace aside.
    assert normalized(locals_()["extra_column_families"]) == normalized(
        "${{for pair in flatten([for table, families in var.extra_tables : [for family in "
        'families : {table = table, family = family}]]) : "${pair.table}/${pair.family}" '
        "=> pair}}"
    )


def test_every_family_keeps_one_version() -> None:
    max_one_version = "${jsonencode({rules=[{max_version=1}]})}"
    policies = gc_policies()
    covered = []
    for table_expression, family, rules in policies:
        assert rules == max_one_version, f"{table_expression} {family}: {rules}"
        match = re.fullmatch(r"\$\{google_bigtable_table\.(\w+)\.name\}", table_expression)
        assert match, table_expression
        covered.append((match.group(1), family))
    expected = [(name, family) for name, (_, fams) in bigtable_tables().items() for family in fams]
    # Exactly one policy per family: several policies on one family interfere.
    assert sorted(covered) == sorted(expected)


TERRAFORM_OUTPUTS_USED = {
    "subscription_path",
    "dead_letter_topic_path",
    "bigtable_instance_id",
    "consent_table_id",
    "telemetry_table_id",
    "rollups_table_id",
    "bucket_name",
    "temp_location",
    "staging_location",
    "service_account_email",
    "image_repository",
    "region",
}


def test_outputs_feed_the_dataflow_commands() -> None:
    outputs = {name for block in terraform()["output"] for name in block}
    assert outputs >= TERRAFORM_OUTPUTS_USED
    flex_mk = (DATAFLOW / "flex.mk").read_text()
    used = set(re.findall(r"\$\(call tf_output,(\w+)\)", flex_mk))
    assert used <= outputs, used - outputs


def test_every_variable_is_documented() -> None:
    for name, body in variables().items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


# --- Consent lookup function (lookup.tf) -----------------------------------------------------

LOOKUP_ACCOUNT = "google_service_account.lookup[0]."
PUBLIC = ("allusers", "allauthenticatedusers")
INVOKER_ROLES = ("roles/run.invoker", "roles/cloudfunctions.invoker")


def iam_bodies() -> Iterator[tuple[str, str, Block]]:
    """(type, name, body) of every IAM resource, and every binding of a google_iam_policy."""
    for (rtype, name), body in resources().items():
        if "_iam_" in rtype:
            yield rtype, name, body
    for (dtype, name), body in _labelled("data").items():
        if dtype == "google_iam_policy":
            for binding in body.get("binding", []):
                yield dtype, name, binding


def strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed block (keys and values), recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_lookup_reads_only_the_consent_table() -> None:
    grants = [
        (rtype, str(resolve(body["role"])), body)
        for rtype, _name, body in iam_bodies()
        if any(LOOKUP_ACCOUNT in m for m in members(body))
    ]
    assert len(grants) == 1, grants
    ((rtype, role, body),) = grants
    assert (rtype, role) == ("google_bigtable_table_iam_member", "roles/bigtable.reader")
    assert body["table"] == "${google_bigtable_table.consent.name}"
    assert body["instance_name"] == "${google_bigtable_instance.main.name}"
    assert body["member"] == "serviceAccount:${google_service_account.lookup[0].email}"
    assert body["count"] == "${local.lookup_count}"  # exists only with lookup_enabled


def test_lookup_runs_as_its_own_service_account() -> None:
    account = resource("google_service_account", "lookup")
    assert resolve(account["account_id"]) == "consent-lookup"
    function = resource("google_cloudfunctions2_function", "lookup")
    (service,) = function["service_config"]
    assert service["service_account_email"] == "${google_service_account.lookup[0].email}"
    assert not is_worker(service["service_account_email"])
    assert resolve(variables()["lookup_enabled"]["default"]) is False


def test_lookup_function_matches_the_code() -> None:
    function = resource("google_cloudfunctions2_function", "lookup")
    (build,) = function["build_config"]
    assert (build["runtime"], build["entry_point"]) == (
        "python311",
        lookup_http.lookup_consent.__name__,
    )
    (storage,) = build["source"][0]["storage_source"]
    assert storage["bucket"] == "${google_storage_bucket.dataflow.name}"
    assert storage["object"] == "${google_storage_bucket_object.lookup_source[0].name}"
    source = resource("google_storage_bucket_object", "lookup_source")
    assert source["bucket"] == "${google_storage_bucket.dataflow.name}"  # the existing bucket
    assert source["source"] == "${var.lookup_source_zip}"
    (service,) = function["service_config"]
    assert service["environment_variables"] == {
        lookup_http.PROJECT_ENV: "${var.project_id}",
        lookup_http.INSTANCE_ENV: "${google_bigtable_instance.main.name}",
        lookup_http.TABLE_ENV: "${google_bigtable_table.consent.name}",
    }
    assert 1 <= int(resolve(service["max_instance_count"])) <= 100
    assert int(service["timeout_seconds"]) > lookup_http.MAX_TIMEOUT_SECONDS


def test_lookup_invokers_come_only_from_the_variable() -> None:
    invoker_grants = [
        (rtype, body)
        for rtype, _name, body in iam_bodies()
        if resolve(body["role"]) in INVOKER_ROLES
    ]
    assert len(invoker_grants) == 1, invoker_grants
    ((rtype, body),) = invoker_grants
    assert rtype == "google_cloud_run_v2_service_iam_member"
    assert normalized(body["for_each"]) == (
        "${var.lookup_enabled?toset(var.lookup_invokers):toset([])}"
    )
    assert body["member"] == "${each.value}"
    assert body["role"] == "roles/run.invoker"
    assert body["name"] == "${google_cloudfunctions2_function.lookup[0].service_config[0].service}"
    assert resolve(variables()["lookup_invokers"]["default"]) == []


def test_nothing_is_granted_to_the_public() -> None:
    for rtype, name, body in iam_bodies():
        for member in members(body):
            assert member.lower() not in PUBLIC, f"{rtype}.{name} grants to {member}"
    # Nowhere in the configuration at all, except in the validation that refuses them.
    configuration = {kind: blocks for kind, blocks in terraform().items() if kind != "variable"}
    others = {name: body for name, body in variables().items() if name != "lookup_invokers"}
    for text in [*strings(configuration), *strings(others)]:
        assert not any(word in text.lower() for word in PUBLIC), text


def lookup_invoker_validations() -> list[Block]:
    return list(variables()["lookup_invokers"]["validation"])


def test_lookup_invokers_validation_refuses_the_public() -> None:
    refusal, principal = lookup_invoker_validations()
    assert normalized(refusal["condition"]) == (
        '${alltrue([formemberinvar.lookup_invokers:!contains(["allusers","allauthenticatedusers"]'
        ",lower(member))])}"
    )
    # The second validation's pattern, evaluated here (RE2 and Python agree on it).
    match = re.search(r'regex\("(.+)", member\)', principal["condition"])
    assert match, principal["condition"]
    pattern = re.compile(match.group(1))
    for ok in ("user:a@example.com", "serviceAccount:c@p.iam.gserviceaccount.com", "group:g@x.io"):
        assert pattern.search(ok), ok
    for bad in ("allUsers", "allAuthenticatedUsers", "a@example.com", "user:a@x.com,user:b@x.com"):
        assert not pattern.search(bad), bad


def test_lookup_apis_are_enabled_only_with_the_lookup() -> None:
    apis = resource("google_project_service", "apis")
    assert normalized(apis["for_each"]) == (
        "${var.enable_apis?setunion(local.apis,var.lookup_enabled?local.lookup_apis:toset([]))"
        ":toset([])}"
    )
    lookup_apis = str(resolve("${local.lookup_apis}"))  # "${toset([...])}"
    assert set(re.findall(r"[a-z]+\.googleapis\.com", lookup_apis)) == {
        "artifactregistry.googleapis.com",
        "cloudbuild.googleapis.com",
        "cloudfunctions.googleapis.com",
        "run.googleapis.com",
    }


def test_lookup_outputs() -> None:
    outputs = {name: body for block in terraform()["output"] for name, body in block.items()}
    assert normalized(outputs["lookup_uri"]["value"]) == (
        "${one(google_cloudfunctions2_function.lookup[*].service_config[0].uri)}"
    )
    lookup_mk = (ROOT / "infra" / "lookup" / "lookup.mk").read_text()
    used = set(re.findall(r"\$\(call tf_output,(\w+)\)", lookup_mk))
    assert used == {"lookup_service_account_email"}
    assert used <= set(outputs)


# --- Flex template metadata ------------------------------------------------------------------


# The template is the streaming job (launch.py always adds --streaming): the batch backfill's
# flags have no place in it; backfills run with `python -m stream.main --input ...`.
BATCH_ONLY_FLAGS = {"input", "input_schema"}


def ingest_flags() -> dict[str, argparse.Action]:
    """Every streaming flag IngestOptions defines, by dest (the name the template passes)."""
    parser = argparse.ArgumentParser()
    IngestOptions._add_argparse_args(parser)
    return {
        action.dest: action
        for action in parser._actions
        if action.dest != "help" and action.dest not in BATCH_ONLY_FLAGS
    }


@cache
def metadata() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((DATAFLOW / "metadata.json").read_text()))


def parameters() -> dict[str, dict[str, Any]]:
    return {param["name"]: param for param in metadata()["parameters"]}


def accepts(param: str, value: str) -> bool:
    """Whether every regex of the parameter accepts the value, as the template service checks."""
    return all(re.fullmatch(rx, value) for rx in parameters()[param]["regexes"])


# Parameters that are Beam's own options rather than IngestOptions flags.
BEAM_PARAMETERS = {"sdk_container_image"}


def test_metadata_has_a_parameter_for_every_flag() -> None:
    assert metadata()["name"] and metadata()["description"]
    flags = set(ingest_flags())
    params = list(parameters())
    assert len(params) == len(set(params)), "duplicate parameter"
    assert flags <= set(params), f"flags without a parameter: {flags - set(params)}"
    assert set(params) <= flags | BEAM_PARAMETERS, f"stale: {set(params) - flags}"


@pytest.mark.parametrize("name", sorted(ingest_flags()) + sorted(BEAM_PARAMETERS))
def test_parameter_is_described_and_its_regexes_compile(name: str) -> None:
    param = parameters()[name]
    assert param["label"].strip() and param["helpText"].strip()
    assert isinstance(param["isOptional"], bool)
    assert param["regexes"], f"{name} has no regexes"
    for rx in param["regexes"]:
        compiled = re.compile(rx)
        assert rx.startswith("^") and rx.endswith("$"), f"{name}: unanchored {rx}"
        assert not compiled.fullmatch(""), f"{name} accepts an empty value"


@pytest.mark.parametrize("name", sorted(ingest_flags()))
def test_parameter_accepts_the_flags_default_and_choices(name: str) -> None:
    action = ingest_flags()[name]
    if action.default is not None:
        default = action.default
        text = str(default).lower() if isinstance(default, bool) else str(default)
        assert accepts(name, text), f"{name} rejects its default {text!r}"
    for choice in action.choices or ():
        assert accepts(name, str(choice))


def test_required_parameters_are_the_ones_dataflow_needs() -> None:
    required = {name for name, param in parameters().items() if not param["isOptional"]}
    assert required == {"subscription", "sdk_container_image"}


# Values the code's own patterns (stream/launch/options.py) accept or reject, for path-like flags.
PATH_SAMPLES = {
    "subscription": (
        opts.SUBSCRIPTION_RE,
        [
            "projects/my-project/subscriptions/request_buffer-sub",
            "projects/a.com:p-1/subscriptions/s1x",
        ],
        [
            "request_buffer-sub",
            "projects/my-project/topics/request_buffer",
            "projects/p/subscriptions/request_buffer-sub",
            "projects/my-project/subscriptions/a/b",
            "projects/My-Project/subscriptions/request_buffer-sub",
        ],
    ),
    "dead_letter_topic": (
        opts.TOPIC_RE,
        ["projects/my-project/topics/request_buffer-deadletter"],
        [
            "request_buffer-deadletter",
            "projects/my-project/subscriptions/request_buffer-sub",
            "projects/my-project/topics/",
        ],
    ),
    "bigtable_project": (
        opts.PROJECT_RE,
        ["my-project", "local-project"],
        ["My-Project", "proj", "my_project", "my-project-", "x" * 31],
    ),
    "bigtable_instance": (
        opts.INSTANCE_RE,
        ["scale-bigtable", "abcdef"],
        ["Scale-Bigtable", "abc", "scale_bigtable", "scale-bigtable-"],
    ),
    "consent_table": (opts.TABLE_RE, ["scale-traffic", "a_b.c"], ["a/b", "x" * 51, "a b"]),
    "telemetry_table": (opts.TABLE_RE, ["telemetry"], ["tele metry", "t/x"]),
}


@pytest.mark.parametrize("name", sorted(PATH_SAMPLES))
def test_path_parameters_match_the_codes_patterns(name: str) -> None:
    pattern, good, bad = PATH_SAMPLES[name]
    for value in good:
        assert pattern.match(value), f"sample {value!r} is not valid for the code"
        assert accepts(name, value), f"{name} rejects valid {value!r}"
    for value in bad:
        assert not pattern.match(value), f"sample {value!r} is valid for the code"
        assert not accepts(name, value), f"{name} accepts invalid {value!r}"


def test_schema_parameters() -> None:
    for schema in BUILT_IN:
        assert accepts("default_schema", schema)
    assert accepts("default_schema", "orders.v1")  # a plugin's; the launch checks it is installed
    for value in ("consent", "consentXv1", "telemetry.v1 ", "Orders.v1", "orders."):
        assert not accepts("default_schema", value)
    assert not accepts("emulators", "yes")
    assert not accepts("record_ingest_time", "maybe")
    assert not accepts("schema_attribute", "schema name")


def test_image_parameter_needs_a_tag_or_digest() -> None:
    repo = "europe-west1-docker.pkg.dev/my-project/stream-ingest/stream-ingest"
    assert accepts("sdk_container_image", f"{repo}:0c2b92e197dc-dirty")
    assert accepts("sdk_container_image", f"{repo}@sha256:{'a' * 64}")
    assert not accepts("sdk_container_image", repo)  # an implicit :latest is not reproducible
    assert not accepts("sdk_container_image", "stream-ingest:1")


INT_CANDIDATES = [-1, 0, 1, 2, 5, 15, 16, 17, 59, 60, 61, 299, 300, 500, 599, 600, 601, 999, 1000]
INT_CANDIDATES += [1001, 3599, 3600, 3601, 65536, 86399, 86400, 86401, 604799, 604800, 604801]
INT_CANDIDATES += [10485759, 10485760, 10485761, 31622399, 31622400, 31622401, 10**10]


def rejected_by_code(flags: list[str], value: int) -> set[str]:
    """The flags to_config rejects when each of them is set to `value` (one call for all)."""
    argv = ["--streaming", *(f"--{flag}={value}" for flag in flags)]
    try:
        to_config(PipelineOptions(argv))
    except ConfigError as exc:
        return {flag for flag in flags if f"--{flag}={value}:" in str(exc)}
    return set()


def test_integer_parameters_accept_exactly_what_the_code_accepts() -> None:
    int_flags = sorted(name for name, action in ingest_flags().items() if action.type is int)
    assert len(int_flags) == 14
    assert {"write_retry_seconds", "max_lease_seconds"} <= set(int_flags)
    for value in INT_CANDIDATES:
        rejected = rejected_by_code(int_flags, value)
        for flag in int_flags:
            code_ok = flag not in rejected
            assert accepts(flag, str(value)) == code_ok, f"--{flag}={value}: code ok={code_ok}"
    for flag in int_flags:
        for bad in ("+1", "01", "1.0", "1e3", "ten"):
            assert not accepts(flag, bad), f"{flag} accepts {bad!r}"


# --- Launcher entry point and image ----------------------------------------------------------


@cache
def launch_module() -> Any:
    spec = importlib.util.spec_from_file_location("flex_launch", DATAFLOW / "launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flex_argv(argv: list[str]) -> list[str]:
    function = cast(Callable[[list[str]], list[str]], launch_module().flex_argv)
    return function(argv)


DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=europe-west1",
    "--temp_location=gs://my-bucket/tmp",
]


def test_launcher_turns_template_switches_into_flags() -> None:
    sub = "--subscription=projects/my-project/subscriptions/request_buffer-sub"
    assert flex_argv([sub, "--record_ingest_time=true"]) == [
        "--streaming",
        sub,
        "--record_ingest_time",
    ]
    assert flex_argv([sub, "--record_ingest_time=false"]) == ["--streaming", sub]
    with pytest.raises(ValueError, match="expected true or false"):
        flex_argv(["--record_ingest_time=maybe"])


def test_every_parameter_value_the_template_accepts_starts_the_pipeline() -> None:
    """Launcher-style `--name=value` for every flag (defaults or samples) passes to_config."""
    samples = {
        "subscription": "projects/my-project/subscriptions/request_buffer-sub",
        "dead_letter_topic": "projects/my-project/topics/request_buffer-deadletter",
        "bigtable_project": "my-project",
        "record_ingest_time": "true",
        "id_label": "message_id",
        "timestamp_attribute": "event_time",
        "emulators": "off",
        "max_event_age_seconds": "604800",  # default: 7 days when streaming
        "rollups": "on",  # default: on when streaming
        "service_catalog": "gs://my-bucket/service-catalog.txt",
    }
    # Read at start-up from GCS, which is out of reach here (test_options reads a local one).
    not_started = {"service_catalog"}
    argv = []
    for name, action in ingest_flags().items():
        value = samples.get(name, action.default)
        assert value is not None, f"no sample for {name}"
        assert accepts(name, str(value)), f"{name}={value}"
        if name not in not_started:
            argv.append(f"--{name}={value}")
    options = PipelineOptions(DATAFLOW_ARGS + flex_argv(argv))
    config = to_config(options)
    assert config.bigtable.record_ingest_time is True
    assert config.pubsub.subscription == samples["subscription"]
    assert config.bigtable.project == "my-project"


def dockerfile() -> str:
    return (DATAFLOW / "Dockerfile").read_text()


def beam_pin() -> str:
    match = re.search(r'"apache-beam\[gcp\]==([0-9.]+)"', PYPROJECT.read_text())
    assert match
    return match.group(1)


def test_dockerfile_installs_the_project_and_checks_dependencies() -> None:
    text = dockerfile().replace("\\\n", " ")  # join continuation lines
    runs = " ".join(re.findall(r"^RUN (.*)$", text, flags=re.MULTILINE))
    assert re.search(r"pip install (--no-cache-dir )?\.(\s|$)", runs), "project not installed"
    assert "pip check" in runs
    copied = " ".join(re.findall(r"^COPY (?!--from)(.*)$", text, flags=re.MULTILINE)).split()
    for path in ("pyproject.toml", "README.md", "stream", "schemas"):
        assert path in copied, f"{path} is not copied into the image"
    for path in ("loadgen", "tests", "."):
        assert path not in copied, f"{path} is copied into the image the workers run"


def test_the_image_installs_the_listed_schema_plugins_and_lists_them() -> None:
    text = dockerfile().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    default = ROOT / args["PLUGIN_REQUIREMENTS"]
    assert default == DATAFLOW / "plugins.txt" and default.is_file()
    listed = [line for line in default.read_text().splitlines() if not line.startswith("#")]
    assert listed == []  # none by default: the image is the product alone
    assert re.search(
        r"^COPY \$\{PLUGIN_REQUIREMENTS\} infra/dataflow/plugin-requirements.txt$", text, re.M
    )
    assert re.search(r"^COPY infra/dataflow/plugins infra/dataflow/plugins$", text, re.M)
    runs = re.findall(r"^RUN (.*)$", text, flags=re.MULTILINE)
    project = next(
        i for i, run in enumerate(runs) if re.search(r"pip install (--no-cache-dir )?\.", run)
    )
    plugins = next(
        i for i, run in enumerate(runs) if "-r infra/dataflow/plugin-requirements.txt" in run
    )
    assert project < plugins  # after stream-ingest, which the plugins depend on
    assert "pip check" in runs[plugins] and "python -m stream.schemas" in runs[plugins]
    ignore = (DATAFLOW / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"!infra/dataflow/plugins.txt", "!infra/dataflow/plugins/"} <= set(ignore)
    build = (DATAFLOW / "cloudbuild.yaml").read_text()
    assert "--build-arg=PLUGIN_REQUIREMENTS=${_PLUGIN_REQUIREMENTS}" in build
    assert re.search(r"_PLUGIN_REQUIREMENTS: infra/dataflow/plugins.txt$", build, re.M)
    flex = (DATAFLOW / "flex.mk").read_text()
    assert "_PLUGIN_REQUIREMENTS=$(PLUGIN_REQUIREMENTS)" in flex
    assert "PLUGIN_REQUIREMENTS ?= $(FLEX_DIR)/plugins.txt" in flex


def test_the_wheel_holds_the_product_and_no_load_generator() -> None:
    find = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = set(setuptools.find_packages(where=str(ROOT), include=find["include"]))
    assert {"stream", "stream.pipeline", "stream.launch", "schemas"} <= packages
    assert not {p for p in packages if p.split(".")[0] in {"loadgen", "tests", "infra"}}


def test_image_carries_the_pinned_beam_sdk() -> None:
    text = dockerfile()
    assert re.search(r"^FROM apache/beam_python3\.11_sdk:\$\{BEAM_VERSION\}$", text, re.M)
    assert re.search(rf"^ARG BEAM_VERSION={re.escape(beam_pin())}$", text, re.M)
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher " in text
    assert re.search(r"^FROM \$\{LAUNCHER_IMAGE\} AS launcher$", text, re.M)
    launcher = re.search(r"^ARG LAUNCHER_IMAGE=(\S+)$", text, re.M)
    assert launcher and "python311-template-launcher-base" in launcher.group(1)
    build = (DATAFLOW / "cloudbuild.yaml").read_text()
    assert re.search(rf"_BEAM_VERSION: {re.escape(beam_pin())}$", build, re.M)
    assert "--file=infra/dataflow/Dockerfile" in build


def test_flex_template_py_file_is_the_launcher_in_the_repo() -> None:
    text = dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    env = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)$", text, flags=re.MULTILINE)
    assert env, "FLEX_TEMPLATE_PYTHON_PY_FILE is not set"
    in_image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], env.group(1)).strip('"')
    workdir = args["WORKDIR"]
    assert in_image.startswith(workdir + "/")
    relative = in_image.removeprefix(workdir + "/")
    assert (ROOT / relative).is_file(), f"{relative} does not exist in the repository"
    assert re.search(rf"^COPY {re.escape(relative)} {re.escape(relative)}$", text, re.M)
    assert callable(launch_module().main)
