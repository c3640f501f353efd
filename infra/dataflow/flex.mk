# Dataflow flex template: build the image and template spec, launch, update and drain the job.
#
# Included from the Makefile (`include infra/dataflow/flex.mk`). Every variable can be overridden
# on the command line; resource names default to the Terraform outputs of infra/terraform:
#   make flex-build PROJECT=my-project
#   make flex-run   PROJECT=my-project MAX_WORKERS=20
#   make flex-update PROJECT=my-project TRANSFORM_NAME_MAPPINGS=OldStep=NewStep
# See infra/dataflow/README.md.

FLEX_DIR := infra/dataflow
TF_DIR ?= infra/terraform
GCLOUD ?= gcloud
comma := ,

# `terraform output -raw NAME`, read once per make run and only by targets that use it; empty when
# the configuration is not applied (or terraform is missing), so overrides always work.
tf_output = $(or $(_tf_$(1)),$(eval _tf_$(1) := $(shell terraform -chdir=$(TF_DIR) output -raw $(1) 2>/dev/null))$(_tf_$(1)))

# Fail before calling gcloud when a required value is empty, saying how to set it.
require = $(if $(strip $($(1))),,$(error $(1) is not set: $(2)))

PROJECT ?=
REGION ?= $(or $(call tf_output,region),europe-west1)
BUCKET ?= $(call tf_output,bucket_name)
IMAGE_REPOSITORY ?= $(or $(call tf_output,image_repository),$(REGION)-docker.pkg.dev/$(PROJECT)/stream-ingest)
# One tag per commit (with -dirty for uncommitted changes): image and spec are built together and
# a running job can always be traced to its source. Pass TAG=... to run or update an older build.
TAG ?= $(shell git describe --always --dirty --abbrev=12 2>/dev/null)
IMAGE ?= $(IMAGE_REPOSITORY)/stream-ingest:$(TAG)
TEMPLATE ?= gs://$(BUCKET)/templates/stream-ingest-$(TAG).json
# Only its launcher binary is copied into the image; pin a digest for reproducible builds.
LAUNCHER_IMAGE ?= gcr.io/dataflow-templates-base/python311-template-launcher-base:latest
# Schema plugins baked into the image: a pip requirements file in the repository.
PLUGIN_REQUIREMENTS ?= $(FLEX_DIR)/plugins.txt
# The worker SDK image must carry exactly the Beam version pyproject.toml pins.
FLEX_BEAM_VERSION ?= $(or $(BEAM_VERSION),$(shell sed -n 's/.*"apache-beam\[gcp\]==\([0-9.]*\)".*/\1/p' pyproject.toml))

JOB_NAME ?= stream-ingest
SUBSCRIPTION ?= $(call tf_output,subscription_path)
DEAD_LETTER_TOPIC ?= $(call tf_output,dead_letter_topic_path)
BIGTABLE_PROJECT ?= $(PROJECT)
BIGTABLE_INSTANCE ?= $(call tf_output,bigtable_instance_id)
CONSENT_TABLE ?= $(call tf_output,consent_table_id)
TELEMETRY_TABLE ?= $(call tf_output,telemetry_table_id)
SERVICE_ACCOUNT ?= $(call tf_output,service_account_email)
TEMP_LOCATION ?= $(call tf_output,temp_location)
STAGING_LOCATION ?= $(call tf_output,staging_location)

# Streaming Engine scales on throughput and backlog between NUM_WORKERS and MAX_WORKERS.
NUM_WORKERS ?= 1
MAX_WORKERS ?= 10
MACHINE_TYPE ?= n2-standard-2
# More template parameters, comma-separated name=value (see metadata.json), e.g. write_batch_rows=200
EXTRA_PARAMETERS ?=
# Renamed or removed steps for flex-update: OldName=NewName,Removed= (empty = no mapping)
TRANSFORM_NAME_MAPPINGS ?=

FLEX_PARAMETERS = subscription=$(SUBSCRIPTION),dead_letter_topic=$(DEAD_LETTER_TOPIC),bigtable_project=$(BIGTABLE_PROJECT),bigtable_instance=$(BIGTABLE_INSTANCE),consent_table=$(CONSENT_TABLE),telemetry_table=$(TELEMETRY_TABLE),sdk_container_image=$(IMAGE)$(if $(strip $(EXTRA_PARAMETERS)),$(comma)$(EXTRA_PARAMETERS))

TF_HINT = apply infra/terraform first (its outputs are the defaults) or pass it explicitly

define flex_check_common
	$(call require,PROJECT,pass PROJECT=<project id> (make $@ PROJECT=my-project))
	$(call require,BUCKET,$(TF_HINT): BUCKET=<bucket name>)
	$(call require,TAG,not a git checkout: pass TAG=<image tag>)
endef

define flex_check_run
	$(flex_check_common)
	$(call require,SUBSCRIPTION,$(TF_HINT): SUBSCRIPTION=projects/<p>/subscriptions/<s>)
	$(call require,DEAD_LETTER_TOPIC,$(TF_HINT): DEAD_LETTER_TOPIC=projects/<p>/topics/<t>)
	$(call require,BIGTABLE_INSTANCE,$(TF_HINT): BIGTABLE_INSTANCE=<instance id>)
	$(call require,CONSENT_TABLE,$(TF_HINT): CONSENT_TABLE=<table id>)
	$(call require,TELEMETRY_TABLE,$(TF_HINT): TELEMETRY_TABLE=<table id>)
	$(call require,SERVICE_ACCOUNT,$(TF_HINT): SERVICE_ACCOUNT=<worker service account email>)
	$(call require,TEMP_LOCATION,$(TF_HINT): TEMP_LOCATION=gs://<bucket>/tmp)
	$(call require,STAGING_LOCATION,$(TF_HINT): STAGING_LOCATION=gs://<bucket>/staging)
endef

# Shared by flex-run and flex-update: the job's environment and parameters.
FLEX_RUN = $(GCLOUD) dataflow flex-template run "$(JOB_NAME)" \
	  --project="$(PROJECT)" \
	  --region="$(REGION)" \
	  --template-file-gcs-location="$(TEMPLATE)" \
	  --service-account-email="$(SERVICE_ACCOUNT)" \
	  --temp-location="$(TEMP_LOCATION)" \
	  --staging-location="$(STAGING_LOCATION)" \
	  --enable-streaming-engine \
	  --additional-pipeline-options=autoscaling_algorithm=THROUGHPUT_BASED \
	  --num-workers="$(NUM_WORKERS)" \
	  --max-workers="$(MAX_WORKERS)" \
	  --worker-machine-type="$(MACHINE_TYPE)" \
	  --parameters="$(FLEX_PARAMETERS)"

.PHONY: flex-build flex-run flex-update flex-drain

flex-build: ## Build the Dataflow flex template image and spec
	$(flex_check_common)
	$(GCLOUD) builds submit . \
	  --project="$(PROJECT)" \
	  --config="$(FLEX_DIR)/cloudbuild.yaml" \
	  --substitutions="_IMAGE=$(IMAGE),_BEAM_VERSION=$(FLEX_BEAM_VERSION),_LAUNCHER_IMAGE=$(LAUNCHER_IMAGE),_PLUGIN_REQUIREMENTS=$(PLUGIN_REQUIREMENTS)"
	$(GCLOUD) dataflow flex-template build "$(TEMPLATE)" \
	  --project="$(PROJECT)" \
	  --image="$(IMAGE)" \
	  --sdk-language=PYTHON \
	  --metadata-file="$(FLEX_DIR)/metadata.json"
	@echo "image:    $(IMAGE)"
	@echo "template: $(TEMPLATE)"

flex-run: ## Launch the streaming job from the flex template (Streaming Engine, autoscaling)
	$(flex_check_run)
	$(FLEX_RUN)

flex-update: ## Replace the running job in place (--update; TRANSFORM_NAME_MAPPINGS=old=new,...)
	$(flex_check_run)
	$(FLEX_RUN) \
	  --update$(if $(strip $(TRANSFORM_NAME_MAPPINGS)), --transform-name-mappings="$(TRANSFORM_NAME_MAPPINGS)")

flex-drain: ## Drain the running job: stop reading, finish in-flight work, then stop
	$(call require,PROJECT,pass PROJECT=<project id> (make $@ PROJECT=my-project))
	@job_id="$$($(GCLOUD) dataflow jobs list --project="$(PROJECT)" --region="$(REGION)" \
	    --status=active --filter="name=$(JOB_NAME)" --format="value(id)" --limit=1)"; \
	if [ -z "$$job_id" ]; then echo "no active job named $(JOB_NAME) in $(REGION)" >&2; exit 1; fi; \
	echo "draining $(JOB_NAME) ($$job_id)"; \
	$(GCLOUD) dataflow jobs drain "$$job_id" --project="$(PROJECT)" --region="$(REGION)"
