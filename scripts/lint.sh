#!/usr/bin/env bash
# `make lint`: every config checked by the tool its field uses. Each finding names its file
# and line; any finding fails the run (all checks run first, so one run shows them all).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

VENV=.venv/bin
failed=()
check() {  # check <name> <command...>
  local name=$1
  shift
  echo "== $name"
  "$@" || failed+=("$name")
}

# nginx -T inside a stack's own nginx container (its image, mounts, entrypoint), without its
# app servers (shared/compose/lint-nginx.yaml points their names at loopback), then gixy on
# the full rendered config. A stack without an nginx service is checked in its one service
# if that has nginx (single-container); flask-dev has none.
# With overlays after them (TLS=on with throwaway certificates, ALLOWED_IPS, LOG_FORMAT=json,
# METRICS=1), their config too.
nginx_check() {
  local stack=$1 service=$2 project dump overlay file
  shift 2
  overlay=$*
  project="lint-$stack-$$"
  dump=$(mktemp --suffix=.conf)
  local compose=(docker compose -f "stacks/$stack/compose.yaml" -p "$project")
  [ "$service" = nginx ] && compose+=(-f shared/compose/lint-nginx.yaml)
  for file in "$@"; do compose+=(-f "$file"); done
  # every image of the stack first: nginx's is built on the app image (the app's static files
  # in it), and single-container bakes the nginx files into its own
  "${compose[@]}" build --quiet >"$dump.raw" 2>"$dump.err" \
    && "${compose[@]}" run --rm --no-deps -T "$service" nginx -T >"$dump.raw" 2>"$dump.err"
  local rc=$?
  "${compose[@]}" down --volumes --remove-orphans >/dev/null 2>&1
  if [ $rc -ne 0 ]; then
    grep -E 'emerg|error' "$dump.err" >&2 || cat "$dump.err" >&2
    rm -f "$dump" "$dump.raw" "$dump.err"
    return 1
  fi
  sed -n '/^# configuration file /,$p' "$dump.raw" >"$dump"   # drop the entrypoint's own lines
  $VENV/gixy --format text ${GIXY_SKIPS:+--skips "$GIXY_SKIPS"} "$dump" 2>&1 | grep -v '^\[nginx_parser\]' | sed "s|$dump|stacks/$stack${overlay:+ + $overlay} (nginx -T)|"
  rc=${PIPESTATUS[0]}
  rm -f "$dump" "$dump.raw" "$dump.err"
  return "$rc"
}

check "ruff check" $VENV/ruff check .
check "ruff format" $VENV/ruff format --check .
check "hadolint" $VENV/hadolint shared/docker/Dockerfile shared/docker/single-container.Dockerfile \
  shared/nginx/Dockerfile \
  shared/docker/standins/*/Dockerfile
# not the postgres stand-in's entrypoints: docker-library/postgres's own, copied verbatim (its
# LICENSE beside them) so that the stand-in behaves as the official image does
mapfile -t scripts < <(git ls-files '*.sh' .ci/run ':!shared/docker/standins/postgres/docker-*.sh')
check "shellcheck" shellcheck "${scripts[@]}"

python3 scripts/app.py secrets >/dev/null   # the stacks' compose files need secrets/secret_key
set -a
# shellcheck source=/dev/null  # written by scripts/setup.sh
[ -f .images.env ] && . ./.images.env
set +a
for file in stacks/*/compose.yaml docker-compose.*.yml bench/*/compose.yaml; do
  check "compose config: $file" docker compose -f "$file" config --quiet
done
for file in stacks/*/compose.swarm.yaml; do  # Swarm overrides, over their stack's file
  check "compose config: $file" docker compose -f "$(dirname "$file")/compose.yaml" -f "$file" config --quiet
done
# HTTPS: every nginx config again with its TLS overlay, on a throwaway local certificate
TLS_CERTS_DIR=$(mktemp -d)
chmod 0755 "$TLS_CERTS_DIR"
export TLS_CERTS_DIR
trap 'rm -rf "$TLS_CERTS_DIR"' EXIT
scripts/certs.sh "$TLS_CERTS_DIR" >/dev/null
for file in shared/compose/tls.yaml shared/compose/acme.yaml stacks/*/compose.tls.yaml; do
  check "compose config: $file" docker compose -f stacks/nginx-uwsgi-socket/compose.yaml \
    -f shared/compose/tls.yaml ${file:+-f "$file"} config --quiet
done
# the compose files a feature adds to a stack, as make adds them (none: it does not apply)
overlay_args() {  # overlay_args <stack> <VAR=1...>: "-f file" for each, one per line
  env "${@:2}" python3 scripts/app.py overlays "$1" 2>/dev/null | sed 's/^/-f\n/'
}
# METRICS=1 over every stack that takes it
for file in stacks/*/compose.yaml; do
  stack=$(basename "$(dirname "$file")")
  mapfile -t overlays < <(overlay_args "$stack" METRICS=1)
  [ ${#overlays[@]} -gt 0 ] || continue
  check "compose config: $stack + METRICS=1" docker compose -f "$file" "${overlays[@]}" config --quiet
done
# Prometheus' config and alert rules, by promtool in the Prometheus image the overlay runs:
# syntax, then the rules' unit tests (shared/prometheus/alerts.test.yml)
promtool() {
  docker run --rm --network none -v "$PWD/shared/prometheus:/etc/prometheus:ro" \
    --workdir /etc/prometheus --entrypoint promtool "${PROMETHEUS_IMAGE:-prom/prometheus:v3.13.2}" "$@"
}
check "promtool check config" promtool check config prometheus.yml
check "promtool test rules" promtool test rules alerts.test.yml

# TLS, an allow-list, JSON logs and METRICS together: each overlay's nginx files in one more
# nginx -T.
# gixy's return_bypasses_allow_deny is skipped there, for the two returns it names: the error
# page's (an internal location: it must answer a denied client its JSON 403) and TLS's redirect
# of plain HTTP (an unlisted client learns only the HTTPS address, where it gets the 403).
export ALLOWED_IPS="10.0.0.0/8;2001:db8::/32"
for file in stacks/*/compose.yaml; do
  stack=$(basename "$(dirname "$file")")
  service=$(python3 scripts/app.py nginx "$stack") || { failed+=("which service runs nginx: $stack"); continue; }
  [ -n "$service" ] || continue   # flask-dev: no nginx
  name=$stack
  [ "$service" = nginx ] || name="$stack ($service)"
  mapfile -t with_overlays < <(env TLS=1 LOG_FORMAT=json METRICS=1 python3 scripts/app.py overlays "$stack" 2>/dev/null)
  check "nginx -t + gixy: $name" nginx_check "$stack" "$service"
  GIXY_SKIPS=return_bypasses_allow_deny check "nginx -t + gixy: $name, TLS + ALLOWED_IPS + LOG_FORMAT=json + METRICS" \
    nginx_check "$stack" "$service" "${with_overlays[@]}"
done

# Kubernetes (docs/kubernetes.md): each stack's manifests rendered by kustomize (its ConfigMaps
# read the files the compose stacks mount, outside the folder: hence the load restrictor), then
# scripts/kubernetes-check.sh: the API's schemas and checkov, each skipped check with its why
rendered=$(mktemp -d)
kubernetes_render() {  # kubernetes_render <stack>
  kubectl kustomize --load-restrictor LoadRestrictionsNone "kubernetes/$1" >"$rendered/$1.yaml"
}
for folder in kubernetes/*/; do
  stack=$(basename "$folder")
  [ "$stack" != components ] || continue  # the stacks' shared parts, rendered within each
  check "kustomize: $folder" kubernetes_render "$stack"
done
mapfile -t manifests < <(find "$rendered" -name '*.yaml' -size +0 | sort)
check "kubernetes-validate + checkov: ${manifests[*]##*/}" scripts/kubernetes-check.sh "${manifests[@]}"
rm -rf "$rendered"

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nlint failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
echo "lint: all clean"
