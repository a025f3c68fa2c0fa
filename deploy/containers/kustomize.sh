#!/usr/bin/env bash
# kustomize, for checking deploy/k8s without kubectl: Debian 12 has no kubectl package,
# and a fresh machine need not have another apt source for it. A pinned release of
# sigs.k8s.io/kustomize/kustomize/v5 is built once from the Go module proxy with the
# machine's Go (the one deploy/local/ferretdb.sh uses) into the machine-wide cache
# $FAXBOX_BIN (/opt/faxbox/bin, outside every clone, as the FerretDB binary); later runs
# find it there. Prints the binary's path on stdout, everything else on stderr.
#   "$(bash deploy/containers/kustomize.sh)" build deploy/k8s
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.8.1
KUSTOMIZE_BIN="$FAXBOX_BIN/kustomize-$KUSTOMIZE_VERSION"

built() { [[ -x "$KUSTOMIZE_BIN" ]] && "$KUSTOMIZE_BIN" version >/dev/null 2>&1; }

if ! built; then
    command -v go >/dev/null 2>&1 || die "kustomize: Go not found (expected /usr/local/go/bin/go)"
    mkdir -p "$FAXBOX_BIN"
    # One build at a time on this machine (clones share the cache).
    exec 9>/tmp/faxbox-kustomize-build.lock
    flock 9
    if ! built; then
        log "kustomize: building $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION into $KUSTOMIZE_BIN" >&2
        gobin="$(mktemp -d /tmp/faxbox-kustomize.XXXXXX)"
        trap 'rm -rf "$gobin"' EXIT
        # Outside any module, so that only the module's own go.mod and go.sum decide.
        (cd "$gobin" && GOTOOLCHAIN=local GOBIN="$gobin" go install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION") >&2 ||
            die "kustomize: go install $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION failed"
        mv -f "$gobin/kustomize" "$KUSTOMIZE_BIN"
        built || die "kustomize: $KUSTOMIZE_BIN does not run"
    fi
fi
printf '%s\n' "$KUSTOMIZE_BIN"
