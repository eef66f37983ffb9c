# flask-stacks: run, test and compare Flask deployment stacks. `make` lists the targets.
# Every target that needs Docker first runs scripts/setup.sh (instant once all is there).

SHELL  := /bin/bash
STACKS := $(sort $(patsubst stacks/%/compose.yaml,%,$(wildcard stacks/*/compose.yaml)))
STACK  ?=
TLS    ?=
ACME   ?=
METRICS ?=
PYTEST_ARGS ?=
# Your app instead of the demo app (README.md, "Your app"): APP=path/to/project APP_MODULE=...
# (and APP_STATIC, HEALTH_PATH, APP_DATA, APP_RELEASE_CMD, APP_SECRETS, SECRETS_AS_ENV,
# APP_ENV); make passes
# command-line variables on to scripts/app.py, which checks them.
APP    ?=
CMD    ?=

VENV   := .venv/bin
# base images chosen by setup (official, or local stand-ins where no registry answers)
WITH_IMAGES = set -a && . ./.images.env && set +a &&
# TLS=1 and ACME=1 (docs/https.md), ALLOWED_IPS=... (docs/production-checklist.md), METRICS=1
# (docs/metrics.md): the overlays that switch them on, as scripts/app.py's `env` names them for
# the stack (stackctl/stacks.py: exit 2 where one does not apply)
OVERLAYS = $$FEATURE_OVERLAYS
# the app's compose variables (image, build context, project name...), checked first: exit 2
# with what to fix
WITH_APP = app_env=$$(python3 scripts/app.py env $(STACK)) || exit 2; eval "$$app_env" &&
# DB=postgres, QUEUE=redis, WORKER='...' (docs/services.md): their compose files; then the app's
# own part of them and of APP_SECRETS: the compose file scripts/app.py wrote (none: nothing)
COMPOSE_FILES = -f stacks/$(STACK)/compose.yaml $(OVERLAYS) $$SERVICE_OVERLAYS \
                $${APP_SECRETS_FILE:+-f "$$APP_SECRETS_FILE"}
COMPOSE = $(WITH_IMAGES) $(WITH_APP) docker compose $(COMPOSE_FILES)
# `docker compose ps` format: "<service> http://127.0.0.1:<port>/" per published port
PUBLISHED = '{{.Service}}{{range .Publishers}}{{if .PublishedPort}} {{if eq .TargetPort 8443}}https{{else}}http{{end}}://{{.URL}}:{{.PublishedPort}}/{{end}}{{end}}'

.DEFAULT_GOAL := help
FAMILIES := $(patsubst docker-compose.%.yml,%,$(wildcard docker-compose.*.yml))

.PHONY: help setup offline-images certs secrets up down purge run export k8s logs ps lint bench tune test \
        backup restore \
        test-unit \
        check-stack \
        swarm-up swarm-down \
        $(addprefix up-,$(FAMILIES)) $(addprefix down-,$(FAMILIES))

help: ## list targets and stacks
	@echo "usage: make <target> [STACK=<name>]"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo
	@echo "stacks:"
	@for s in $(STACKS); do printf '  %s\n' "$$s"; done
	@echo
	@echo "server families (docker-compose.<family>.yml; make up-<family>, make down-<family>):"
	@for f in $(FAMILIES); do printf '  %s\n' "$$f"; done

setup: ## install what is missing: Docker engine, Compose, base images, test venv
	@scripts/setup.sh all

offline-images: ## build the local stand-ins for python and nginx and use them
	@scripts/setup.sh standins

check-stack:
	@if [ -z "$(STACK)" ] || [ ! -f "stacks/$(STACK)/compose.yaml" ]; then \
	  echo "STACK='$(STACK)' is not a stack. Use one of: $(STACKS)" >&2; \
	  echo "  e.g. make $(MAKECMDGOALS) STACK=nginx-uwsgi-socket" >&2; exit 2; fi
	@python3 scripts/app.py env $(STACK) >/dev/null   # the app's settings and the features: exit 2 with what to fix

certs: ## make a local CA and a certificate for localhost in certs/ (for TLS=1), print how to trust it
	@scripts/certs.sh certs

# TLS=1 without a certificate of your own (TLS_CERTS_DIR): a local one, made once
ifneq ($(TLS),)
ifeq ($(ACME)$(TLS_CERTS_DIR),)
up: certs/fullchain.pem
endif
endif
certs/fullchain.pem:
	@scripts/certs.sh certs

secrets: ## make the app's secrets (APP_SECRETS) in secrets/ if missing (never overwritten; git ignores it)
	@python3 scripts/app.py secrets

up: check-stack secrets ## build and start STACK (APP=: your app; TLS=1: HTTPS; ACME=1: Let's Encrypt; ALLOWED_IPS=: an allow-list; METRICS=1: Prometheus), wait until healthy
	@scripts/setup.sh docker
	@$(COMPOSE) up --build --detach --wait --wait-timeout 180 \
	  || { $(WITH_IMAGES) python3 scripts/app.py diagnose $(STACK) $(OVERLAYS); exit 1; }
	@$(COMPOSE) ps --format $(PUBLISHED) \
	  | awk 'NF > 1 { s = $$1; $$1 = ""; print "$(STACK) is up:" $$0 " (" s ")" }'

down: check-stack ## stop STACK, remove its containers and network; its volumes (the app's data) stay
	@$(COMPOSE) down --remove-orphans

purge: check-stack ## stop STACK and DELETE its volumes: the app's data, certificates, sockets
	@$(COMPOSE) down --volumes --remove-orphans

run: check-stack secrets ## run CMD='...' once in a fresh app container of STACK (its image, data, secrets, network)
	@if [ -z "$$CMD" ]; then echo "CMD is empty: e.g. make run STACK=$(STACK) CMD='flask --app pkg init-db'" >&2; exit 2; fi
	@scripts/setup.sh docker
	@$(COMPOSE) run --rm --build --no-deps release sh -c "$$CMD"

DEST  ?=
FORCE ?=
export: check-stack ## write DEST: a folder that runs STACK alone (APP=, TLS=1, ACME=1, ALLOWED_IPS=, METRICS=1; FORCE=1 overwrites)
	@scripts/setup.sh venv
	@$(VENV)/python scripts/app.py export $(STACK) "$(DEST)" $(if $(TLS),--tls) $(if $(ACME),--acme) $(if $(filter 1,$(METRICS)),--metrics) $(if $(FORCE),--force)

k8s: check-stack ## write DEST/STACK.yaml: STACK's Kubernetes manifests for APP= (docs/kubernetes.md; FORCE=1 overwrites)
	@scripts/setup.sh venv
	@$(VENV)/python scripts/app.py k8s $(STACK) "$(DEST)" $(if $(FORCE),--force)

FILE  ?=
backup: check-stack ## DB=postgres: a dump of STACK's database in backups/ (pg_dump's custom format, checked)
	@$(WITH_IMAGES) $(WITH_APP) scripts/db.sh backup $(COMPOSE_FILES)

restore: check-stack ## DB=postgres FILE=backups/...dump: load it into a new database (FORCE=1 replaces tables, backed up first)
	@$(WITH_IMAGES) $(WITH_APP) scripts/db.sh restore "$(FILE)" $(if $(FORCE),force) $(COMPOSE_FILES)

logs: check-stack ## follow STACK's logs
	@$(COMPOSE) logs --follow --tail 100

ps: check-stack ## show STACK's containers and their health
	@$(COMPOSE) ps

$(addprefix up-,$(FAMILIES)): up-%: secrets # bring a server family's stacks up at once (the demo app)
	@scripts/setup.sh docker
	@$(WITH_IMAGES) docker compose -f docker-compose.$*.yml up --build --detach --wait --wait-timeout 180
	@$(WITH_IMAGES) docker compose -f docker-compose.$*.yml ps --format $(PUBLISHED) \
	  | awk 'NF > 1 { print $$1 ": " $$2 }'

$(addprefix down-,$(FAMILIES)): down-%: # stop a server family, remove its containers (volumes stay)
	@docker compose -f docker-compose.$*.yml down --remove-orphans

lint: ## check every config: ruff, hadolint, shellcheck, compose config, nginx -t, gixy, promtool, kustomize, kubernetes-validate, checkov
	@scripts/setup.sh all
	@scripts/lint.sh

swarm-up: ## load-balanced-pair on Docker Swarm: REPLICAS=3, REGISTRY=host:port for more hosts
	@scripts/setup.sh all
	@STACK=$(or $(STACK),load-balanced-pair) $(VENV)/python scripts/swarm.py up

swarm-down: ## remove it (and the single-node swarm, if swarm-up created it)
	@STACK=$(or $(STACK),load-balanced-pair) $(VENV)/python scripts/swarm.py down

bench: ## measure every stack side by side (STACKS=a,b DURATION=5 CONNECTIONS=64,256 REPEAT=3) into bench/results/; a committed tree only, unless ALLOW_DIRTY=1
	@scripts/setup.sh all
	$(VENV)/python scripts/bench.py

tune: ## the parameter search behind the servers' settings (SERVERS=nginx-uwsgi-socket,nginx-gunicorn-gevent DURATION REPEAT) into bench/results/tune-*
	@scripts/setup.sh all
	$(VENV)/python scripts/tune.py

# stacks side by side: each stack's checks in one worker, PYTEST_WORKERS workers (docs/tests.md)
# four on two cores: most of a check is waiting (timeouts, healthchecks, drains), and the load
# lock keeps loads apart whatever the count (pytest 15:03 against 16:58 with three, clean clone);
# five: 21:17 against 23:57, but two timed checks failed on the busier machine (2026-12-07)
PYTEST_WORKERS ?= 4
test: $(if $(STACK),check-stack) ## run every test (STACK=<name>: the unit tests and that stack's checks)
	@scripts/setup.sh all
	$(VENV)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(if $(STACK),--stack=$(STACK)) $(PYTEST_ARGS)

test-unit: ## run the tests that need no Docker (the app itself)
	@scripts/setup.sh venv
	$(VENV)/pytest tests/unit $(PYTEST_ARGS)
