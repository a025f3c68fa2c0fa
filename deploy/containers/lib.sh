# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Shared by deploy/containers/*: where things are, what the images are called, and the
# podman settings every command here runs with. Source it; do not run it.
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

CONTAINERS_DIR="$REPO/deploy/containers"
CONTAINERS_VAR="$VAR/containers"

# The local base: Debian bookworm from Debian's own mirror (no image registry is
# reachable here), made once per machine with debootstrap and `podman import`.
DEBIAN_MIRROR="${FAXBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE=localhost/faxbox/debian:bookworm
# Servers compose.yaml takes from registries, built here from Debian's package on the
# base (RabbitMQ) or from the FerretDB binary deploy/local/ferretdb.sh builds.
RABBITMQ_IMAGE=localhost/faxbox/rabbitmq:3.10-debian
FERRETDB_IMAGE="localhost/faxbox/ferretdb:${FERRETDB_VERSION#v}"

# On every image built here (compose.local.yaml sets it for the service images).
BUILD_LABEL=io.faxbox.build=deploy/containers

COMPOSE_FILES=(-f "$REPO/compose.yaml" -f "$REPO/compose.local.yaml")
# podman-compose from PyPI, pinned in uv.lock (dev group), run from this clone's .venv.
PODMAN_COMPOSE=("$REPO/.venv/bin/podman-compose")

# Debian's podman 4.3 runs containers as root on this machine kind only with two
# changes to its defaults: runc instead of crun (crun refuses the hybrid cgroup layout),
# and resource limits no higher than this shell's own (the default nofile of 1048576
# fails: "error setting rlimit type 7"). Our own containers.conf, only for our runs
# (CONTAINERS_CONF), so nothing machine-wide changes.
write_containers_conf() {
    local nofile nproc
    nofile="$(ulimit -H -n)"
    [[ "$nofile" == unlimited || "$nofile" -gt 65536 ]] && nofile=65536
    # runc fails above about 16k processes here, whatever the shell's limit says.
    nproc="$(ulimit -H -u)"
    [[ "$nproc" == unlimited || "$nproc" -gt 4096 ]] && nproc=4096
    mkdir -p "$CONTAINERS_VAR"
    write_if_changed "$CONTAINERS_VAR/containers.conf" <<CONF || true
# Written by deploy/containers/lib.sh; used through CONTAINERS_CONF by deploy/containers/*.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    export CONTAINERS_CONF="$CONTAINERS_VAR/containers.conf"
}

# compose interpolates the whole file for every command; the required passwords get
# stand-ins where they only have to be there (build: none goes into an image; down).
stand_in_passwords() {
    local var
    for var in FAXBOX_RABBITMQ_PASSWORD FAXBOX_MONGO_PASSWORD FAXBOX_IMAP_PASSWORD \
        FAXBOX_SECRET_KEY FAXBOX_GRAFANA_PASSWORD; do
        export "$var=${!var:-unused-stand-in}"
    done
}

# run_stack COMMAND [ARGS]: deploy/containers/stack.py with this clone's Python.
run_stack() {
    command -v podman >/dev/null 2>&1 || die "containers: podman is not installed; run deploy/containers/build"
    [[ -x "${PODMAN_COMPOSE[0]}" ]] || die "containers: ${PODMAN_COMPOSE[0]} missing; run deploy/local/up"
    write_containers_conf
    exec "$PY" "$CONTAINERS_DIR/stack.py" "$@"
}
