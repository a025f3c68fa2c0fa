#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes on this machine, the shape operators run (compose and k8s
# describe three): Debian's RabbitMQ, nodes faxbox-1@host .. faxbox-N@host, each with its
# own ports and data directory, node 2..N joined to node 1, so quorum queues spread over
# all of them. Beside the machine's own node (rabbit@host on 5672), never touching it.
#
#   rabbitmq_cluster.sh up        start the nodes that are not running and join them
#   rabbitmq_cluster.sh down      stop every node (data kept)
#   rabbitmq_cluster.sh kill K    SIGKILL node K (a crash, not a shutdown)
#   rabbitmq_cluster.sh start K   start node K again (it rejoins with its data)
#   rabbitmq_cluster.sh urls      the AMQP URLs, comma-separated (FAXBOX_AMQP_URL)
#   rabbitmq_cluster.sh status    each node: running or not, and its ports
#
# FAXBOX_RABBITMQ_NODES (default 3) sets N. Node K listens on loopback only:
# AMQP 5680+K, management 15680+K, Erlang distribution 25680+K.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES="${FAXBOX_RABBITMQ_NODES:-3}"
[[ "$NODES" =~ ^[1-9]$ ]] || die "rabbitmq cluster: FAXBOX_RABBITMQ_NODES must be 1..9, not '$NODES'"
HOST="$(hostname -s)"
# Under RabbitMQ's own home: its user must write there, and the Erlang cookie (which
# every node of a cluster shares) is the one the machine's node and rabbitmqctl use.
BASE=/var/lib/rabbitmq/faxbox-cluster
LOGS=/var/log/rabbitmq/faxbox-cluster

node_name() { echo "faxbox-$1@$HOST"; }
amqp_port() { echo $((5680 + $1)); }
mgmt_port() { echo $((15680 + $1)); }
dist_port() { echo $((25680 + $1)); }
ctl() { timeout "${CTL_TIMEOUT:-60}" rabbitmqctl -q -n "$(node_name "$1")" "${@:2}"; }
node_up() { CTL_TIMEOUT=15 ctl "$1" await_startup --timeout 5 >/dev/null 2>&1; }
node_pid() {
    local pid
    pid="$(cat "$BASE/node$1/node.pid" 2>/dev/null || true)"
    [[ -n "$pid" && -d "/proc/$pid" ]] && echo "$pid"
    return 0
}

write_node_config() {
    local k="$1" dir="$BASE/node$1"
    mkdir -p "$dir" "$LOGS"
    cat >"$dir/rabbitmq.conf" <<EOF
# Written by deploy/local/rabbitmq_cluster.sh for $(node_name "$k").
listeners.tcp.default = 127.0.0.1:$(amqp_port "$k")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$k")
loopback_users.guest = true
# A node that comes back after a crash finds its peers itself.
cluster_formation.peer_discovery_backend = classic_config
$(for j in $(seq 1 "$NODES"); do echo "cluster_formation.classic_config.nodes.$j = $(node_name "$j")"; done)
EOF
    echo "[rabbitmq_management]." >"$dir/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$dir" "$LOGS"
}

launch_node() {
    local k="$1" dir="$BASE/node$1"
    node_up "$k" && return 0
    write_node_config "$k"
    log "rabbitmq cluster: starting $(node_name "$k") (AMQP $(amqp_port "$k"))"
    # Distribution and epmd on loopback; schedulers that do not spin, since up to nine
    # nodes share this machine's cores with everything else.
    runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
        RABBITMQ_NODENAME="$(node_name "$k")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$LOGS" \
        RABBITMQ_PID_FILE="$dir/node.pid" \
        RABBITMQ_DIST_PORT="$(dist_port "$k")" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none" \
        bash -c 'ulimit -S -n "$(ulimit -H -n)" 2>/dev/null; exec /usr/lib/rabbitmq/bin/rabbitmq-server -detached' \
        </dev/null >>"$LOGS/start.log" 2>&1
}

await_node() {
    local k="$1" end=$((SECONDS + 240))
    until node_up "$k"; do
        ((SECONDS < end)) || {
            tail -n 20 "$LOGS/$(node_name "$k").log" >&2 2>/dev/null || true
            die "rabbitmq cluster: $(node_name "$k") did not start"
        }
        sleep 1
    done
}

start_node() {
    launch_node "$1"
    await_node "$1"
}

joined() {
    # Node K is a member of node 1's cluster (and running).
    ctl 1 cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json, sys; s = json.load(sys.stdin); sys.exit(sys.argv[1] not in s.get("running_nodes", []))' \
            "$(node_name "$1")"
}

join_node() {
    local k="$1"
    joined "$k" && return 0
    log "rabbitmq cluster: joining $(node_name "$k") to $(node_name 1)"
    ctl "$k" stop_app
    ctl "$k" reset
    ctl "$k" join_cluster "$(node_name 1)"
    CTL_TIMEOUT=180 ctl "$k" start_app
}

cmd_up() {
    local k
    # All at once: a stopped cluster's nodes each wait for the one that stopped last
    # (it has the newest tables), so starting them one by one could wait forever.
    for k in $(seq 1 "$NODES"); do launch_node "$k"; done
    for k in $(seq 1 "$NODES"); do await_node "$k"; done
    for k in $(seq 2 "$NODES"); do join_node "$k"; done
    log "rabbitmq cluster: $NODES node(s) running: $(cmd_urls)"
}

cmd_down() {
    local k
    for k in $(seq 1 "$NODES"); do
        if node_up "$k"; then
            log "rabbitmq cluster: stopping $(node_name "$k")"
            ctl "$k" stop >/dev/null || kill -9 "$(node_pid "$k")" 2>/dev/null || true
        fi
    done
}

cmd_kill() {
    local k="$1" pid
    pid="$(node_pid "$k")"
    [[ -n "$pid" ]] || die "rabbitmq cluster: $(node_name "$k") is not running"
    kill -9 "$pid"
    while [[ -d "/proc/$pid" ]]; do sleep 0.1; done
    log "rabbitmq cluster: $(node_name "$k") killed (pid $pid)"
}

cmd_urls() {
    local k urls=()
    for k in $(seq 1 "$NODES"); do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$k")/"); done
    (IFS=,; echo "${urls[*]}")
}

cmd_status() {
    local k
    for k in $(seq 1 "$NODES"); do
        if node_up "$k"; then state=running; else state=down; fi
        echo "$(node_name "$k") $state amqp=$(amqp_port "$k") management=$(mgmt_port "$k")"
    done
}

[[ "$(id -u)" == 0 ]] || die "rabbitmq cluster: run as root (the nodes run as the rabbitmq user)"
command -v rabbitmqctl >/dev/null || die "rabbitmq cluster: RabbitMQ is not installed; run deploy/local/up"
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    kill) cmd_kill "${2:?node number}" ;;
    start) start_node "${2:?node number}" ;;
    urls) cmd_urls ;;
    status) cmd_status ;;
    *) die "usage: rabbitmq_cluster.sh up|down|kill K|start K|urls|status" ;;
esac
