# The consent lookup as an HTTP function (functions-framework): serve locally, bundle, deploy.
# Included from the Makefile. See infra/lookup/README.md.
#   make emulators-up && make lookup-serve     # http://127.0.0.1:8087/?domain=...&user=...
#   make lookup-bundle                          # .build/lookup/ and .build/lookup.zip
#   make lookup-deploy PROJECT=my-project       # gen2 Cloud Function, authenticated callers only
#   make lookup-invoker PROJECT=my-project LOOKUP_INVOKER=serviceAccount:caller@p.iam.gserviceaccount.com
# PROJECT, REGION, BIGTABLE_PROJECT, BIGTABLE_INSTANCE, CONSENT_TABLE, TF_HINT, tf_output and
# require come from infra/dataflow/flex.mk (included first): the function reads the table the
# pipeline writes, named by the same Terraform outputs.

LOOKUP_DIR := infra/lookup
LOOKUP_BUILD ?= .build/lookup
LOOKUP_ZIP ?= .build/lookup.zip
LOOKUP_PORT ?= 8087
# The emulator `make emulators-up` starts, unless BIGTABLE_EMULATOR_HOST names another one.
LOOKUP_EMULATOR ?= $(or $(BIGTABLE_EMULATOR_HOST),127.0.0.1:8086)
LOOKUP_FUNCTION ?= consent-lookup
LOOKUP_SERVICE_ACCOUNT ?= $(call tf_output,lookup_service_account_email)
LOOKUP_MAX_INSTANCES ?= 10
LOOKUP_INVOKER ?=
GCLOUD ?= gcloud

.PHONY: lookup-serve lookup-bundle lookup-deploy lookup-invoker

# LOOKUP_PROJECT is emptied so the function reads the emulator's local-project even when the
# shell holds a real project's settings; LOOKUP_INSTANCE / LOOKUP_TABLE pass through if set.
lookup-serve: venv ## Serve the lookup function on 127.0.0.1:8087, reading the Bigtable emulator
	LOOKUP_PROJECT= BIGTABLE_EMULATOR_HOST="$(LOOKUP_EMULATOR)" $(BIN)/functions-framework \
	  --target=lookup_consent --source=stream/lookup/main.py \
	  --host=127.0.0.1 --port="$(LOOKUP_PORT)"

lookup-bundle: ## Build the function's source directory (.build/lookup) and its zip
	$(PYTHON) $(LOOKUP_DIR)/bundle.py "$(LOOKUP_BUILD)" --zip "$(LOOKUP_ZIP)"

lookup-deploy: lookup-bundle ## Deploy the lookup (gen2 Cloud Function; IAM-authenticated callers only)
	$(call require,PROJECT,pass PROJECT=<project id> (make $@ PROJECT=my-project))
	$(call require,LOOKUP_SERVICE_ACCOUNT,$(TF_HINT): LOOKUP_SERVICE_ACCOUNT=<lookup service account email>)
	$(call require,BIGTABLE_INSTANCE,$(TF_HINT): BIGTABLE_INSTANCE=<instance id>)
	$(call require,CONSENT_TABLE,$(TF_HINT): CONSENT_TABLE=<table id>)
	$(GCLOUD) functions deploy "$(LOOKUP_FUNCTION)" \
	  --gen2 \
	  --runtime=python311 \
	  --project="$(PROJECT)" \
	  --region="$(REGION)" \
	  --source="$(LOOKUP_BUILD)" \
	  --entry-point=lookup_consent \
	  --trigger-http \
	  --no-allow-unauthenticated \
	  --service-account="$(LOOKUP_SERVICE_ACCOUNT)" \
	  --max-instances="$(LOOKUP_MAX_INSTANCES)" \
	  --memory=256Mi \
	  --timeout=30s \
	  --set-env-vars="LOOKUP_PROJECT=$(BIGTABLE_PROJECT),LOOKUP_INSTANCE=$(BIGTABLE_INSTANCE),LOOKUP_TABLE=$(CONSENT_TABLE)"

lookup-invoker: ## Let LOOKUP_INVOKER (user:/group:/serviceAccount:) call the function
	$(call require,PROJECT,pass PROJECT=<project id> (make $@ PROJECT=my-project))
	$(call require,LOOKUP_INVOKER,pass LOOKUP_INVOKER=serviceAccount:<caller>@<project>.iam.gserviceaccount.com)
	@case "$(LOOKUP_INVOKER)" in allUsers|allAuthenticatedUsers) \
	  echo "refusing $(LOOKUP_INVOKER): the lookup answers personal data to named callers only" >&2; \
	  exit 1;; esac
	$(GCLOUD) functions add-invoker-policy-binding "$(LOOKUP_FUNCTION)" \
	  --project="$(PROJECT)" \
	  --region="$(REGION)" \
	  --member="$(LOOKUP_INVOKER)"
