#!/usr/bin/env bash
# What the container path needs on this machine (Debian 12, as root): podman with runc,
# catatonit (compose's `init: true`), debootstrap (the base image), and kubectl for
# checking deploy/k8s (`kubectl kustomize`). Fast no-op when all are installed.
# podman-compose comes from uv.lock (deploy/local/python.sh); Go (the compose-go check)
# is the one deploy/local/ferretdb.sh uses.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(podman runc catatonit debootstrap)

missing=()
for p in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] || die "containers: must run as root to install: ${missing[*]}"
    log "containers: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -q "${missing[@]}"
fi
# kubectl is not in Debian 12; the apt sources of this machine kind have it. Only the
# manifest check needs it, so its absence is a warning here (and a failure there).
if ! command -v kubectl >/dev/null 2>&1; then
    apt-get install -y -q kubectl || warn "containers: kubectl could not be installed"
fi
[[ -x "${PODMAN_COMPOSE[0]}" ]] || bash "$REPO/deploy/local/python.sh"
[[ -x "${PODMAN_COMPOSE[0]}" ]] || die "containers: ${PODMAN_COMPOSE[0]} missing after uv sync"
log "containers: $(podman --version), $("${PODMAN_COMPOSE[@]}" --version 2>/dev/null | tail -n 1)"
