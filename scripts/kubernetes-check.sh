#!/usr/bin/env bash
# Checks rendered Kubernetes manifests (docs/kubernetes.md), as make lint checks the stacks' and
# the tests check what `make k8s` writes for an app: each file validated against the API's
# schemas with unknown fields refused, for the oldest Kubernetes minor still supported
# upstream; then checkov's Kubernetes checks over all of them in one run (its start takes
# longer than its checks), each skip with its why:
#   CKV_K8S_21 (default namespace): the namespace is yours (`kubectl apply -n`, kustomize's)
#   CKV_K8S_14, CKV_K8S_43 (a tag other than latest, a digest): the images are built here as
#     :latest; `kustomize edit set image` points them at your registry's digest
#   CKV_K8S_15 (pull policy Always): IfNotPresent, with a digest the same image, no pull per start
#   CKV_K8S_11 (CPU limits): CFS throttling stalls requests; the CPU request reserves the core
#   CKV_K8S_40 (a high UID): nginx runs as its image's own user, 101, as in the compose stacks
# Usage: scripts/kubernetes-check.sh FILE.yaml...   (from the repository's root; exit 1: failed)
set -uo pipefail

[ $# -gt 0 ] || { echo "usage: $0 FILE.yaml..." >&2; exit 2; }
CHECKOV_SKIPS=CKV_K8S_21,CKV_K8S_14,CKV_K8S_43,CKV_K8S_15,CKV_K8S_11,CKV_K8S_40
status=0
for file in "$@"; do
  .venv/bin/kubernetes-validate --strict --quiet --kubernetes-version 1.36.0 "$file" || status=1
done
.venv-checkov/bin/checkov "${@/#/--file=}" --framework kubernetes --skip-download --compact \
  --quiet --skip-check "$CHECKOV_SKIPS" || status=1
exit "$status"
