#!/usr/bin/env bash
# What the container path needs on this machine (Debian 12, as root): podman with runc,
# catatonit (compose's `init: true`), debootstrap (the base image), and kustomize for
# checking deploy/k8s (deploy/containers/kustomize.sh: Debian 12 has no kubectl). Fast
# no-op when all are there. podman-compose comes from uv.lock (deploy/local/python.sh);
# Go (the compose-go check, kustomize) is the one deploy/local/ferretdb.sh uses.
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
# Only the manifest check needs kustomize, so a failed build is a warning here (and a
# failure there).
bash "$CONTAINERS_DIR/kustomize.sh" >/dev/null || warn "containers: kustomize could not be built"
[[ -x "${PODMAN_COMPOSE[0]}" ]] || bash "$REPO/deploy/local/python.sh"
[[ -x "${PODMAN_COMPOSE[0]}" ]] || die "containers: ${PODMAN_COMPOSE[0]} missing after uv sync"
# Every podman command run with CONTAINERS_CONF (the tests' included) needs the file.
write_containers_conf
log "containers: $(podman --version), $("${PODMAN_COMPOSE[@]}" --version 2>/dev/null | tail -n 1)"
