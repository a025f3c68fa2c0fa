#!/usr/bin/env bash
# RabbitMQ: the Debian package's node (rabbit@$(hostname), data in /var/lib/rabbitmq),
# which is machine-wide and shared by every clone. Loopback only:
#   AMQP 127.0.0.1:5672, management 127.0.0.1:15672, Prometheus 127.0.0.1:15692.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdirs

MARK='# managed by faxbox deploy/local/rabbitmq.sh'
CONF=/etc/rabbitmq/rabbitmq.conf
ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
PLUGINS=(rabbitmq_management rabbitmq_prometheus)
API="http://127.0.0.1:$RABBIT_MGMT_PORT/api/overview"

api_ok() { curl -fsS -m 3 -u guest:guest "$API" >/dev/null; }
prom_ok() { curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$RABBIT_PROM_PORT/metrics"; }
plugins_listed() {
    local p
    for p in "${PLUGINS[@]}"; do
        grep -q "$p" /etc/rabbitmq/enabled_plugins 2>/dev/null || return 1
    done
}

config_changed=0
# rabbitmq.conf: ours unless someone else wrote one (then leave it alone).
if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    warn "rabbitmq: $CONF exists and is not ours; leaving it as it is"
else
    if write_if_changed "$CONF" <<EOF; then config_changed=1; fi
$MARK
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MGMT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $RABBIT_PROM_PORT
# guest/guest may only connect from loopback (the default, stated here on purpose)
loopback_users.guest = true
EOF
    chown rabbitmq:rabbitmq "$CONF" 2>/dev/null || true
fi
# rabbitmq-env.conf: our block (from MARK to END_MARK) keeps epmd and Erlang distribution
# on loopback and raises the node's open-file limit. `su rabbitmq` starts the node with a
# soft limit of 1024; RabbitMQ's file handle cache then allows ~930 handles, which a few
# dozen vhosts of quorum queues use up, and from then on every call that needs a handle
# (creating a vhost, an AMQP handshake, `rabbitmqctl status`) waits forever.
END_MARK='# end of the faxbox block'
WANTED_NOFILE=65536
env_block() {
    cat <<EOF
$MARK
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
faxbox_nofile=\$(ulimit -H -n)
if [ "\$faxbox_nofile" = unlimited ] || [ "\$faxbox_nofile" -gt $WANTED_NOFILE ]; then faxbox_nofile=$WANTED_NOFILE; fi
ulimit -S -n "\$faxbox_nofile" 2>/dev/null || true
$END_MARK
EOF
}
env_conf_without_our_block() {
    [[ -f "$ENV_CONF" ]] || return 0
    # An older version of the block had no end marker: it ran to the end of the file.
    awk -v mark="$MARK" -v end="$END_MARK" '
        $0 == mark { skip = 1; next }
        skip && $0 == end { skip = 0; next }
        !skip { print }' "$ENV_CONF"
}
if {
    env_conf_without_our_block
    echo
    env_block
} | cat -s | write_if_changed "$ENV_CONF"; then
    config_changed=1
fi

# `rabbitmqctl status` waits forever on a node whose file handles are used up: ping.
node_running() { timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
MIN_NOFILE=4096
healthy() {
    python3 "$DEPLOY_DIR/rabbitmq_health.py" check --api "http://127.0.0.1:$RABBIT_MGMT_PORT" \
        --min-fds "$MIN_NOFILE"
}
tidy() { python3 "$DEPLOY_DIR/rabbitmq_health.py" tidy --api "http://127.0.0.1:$RABBIT_MGMT_PORT"; }

stop_node() {
    if ! timeout 90 rabbitmqctl -q stop >/dev/null 2>&1; then
        warn "rabbitmq: the node did not stop within 90 s; killing it"
        pkill -9 -u rabbitmq -x beam.smp || true
        sleep 1
    fi
}

await_startup() {
    local end=$((SECONDS + ${1:-90}))
    # The first await_startup can exit 69 before the node has registered: loop.
    until rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            err "rabbitmq: node did not start; last lines of /var/log/rabbitmq:"
            tail -n 20 /var/log/rabbitmq/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.5
    done
}

start_node() {
    if [[ -z "$(pgrep -x epmd || true)" ]]; then
        : >"$RUN_DIR/epmd.ours"
    else
        rm -f "$RUN_DIR/epmd.ours"
    fi
    # Something else on 5672 would make the node fail in confusing ways.
    local holders
    holders="$(listen_pids "$AMQP_PORT")"
    if [[ -n "$holders" ]]; then
        die "rabbitmq: port $AMQP_PORT is held by pid(s) $holders ($(cmdline "${holders%%$'\n'*}")), not a running rabbit node"
    fi
    log "rabbitmq: starting rabbitmq-server -detached"
    rabbitmq-server -detached </dev/null >>"$LOG_DIR/rabbitmq-start.log" 2>&1
    await_startup 120
    : >"$RUN_DIR/rabbitmq.ours"
    if [[ -f "$RUN_DIR/epmd.ours" ]]; then
        pgrep -x epmd | head -n1 >"$RUN_DIR/epmd.pid" || true
    fi
}

# Fast path: broker, management API and Prometheus endpoint all answer, the configuration is
# current and the node can still do work.
if ((!config_changed)) && port_open 127.0.0.1 "$AMQP_PORT" && api_ok && prom_ok \
    && plugins_listed && healthy; then
    tidy || warn "rabbitmq: could not delete stale scratch vhosts"
    log "rabbitmq: already running"
    exit 0
fi

if node_running; then
    if ((config_changed)); then
        log "rabbitmq: configuration changed; restarting the node"
        stop_node
        start_node
    elif api_ok && ! healthy; then
        log "rabbitmq: the node is running but cannot do work; restarting it"
        stop_node
        start_node
    else
        await_startup 60
    fi
    if ! plugins_listed; then
        log "rabbitmq: enabling ${PLUGINS[*]}"
        rabbitmq-plugins -q enable "${PLUGINS[@]}" >/dev/null
    fi
else
    if ! plugins_listed; then
        log "rabbitmq: enabling ${PLUGINS[*]} (offline)"
        rabbitmq-plugins -q enable --offline "${PLUGINS[@]}" >/dev/null
    fi
    start_node
fi

wait_until 60 api_ok || die "rabbitmq: management API $API does not answer"
wait_until 30 prom_ok || die "rabbitmq: Prometheus endpoint on $RABBIT_PROM_PORT does not answer"
port_open 127.0.0.1 "$AMQP_PORT" || die "rabbitmq: nothing listens on 127.0.0.1:$AMQP_PORT"
tidy || warn "rabbitmq: could not delete stale scratch vhosts"
healthy || die "rabbitmq: the node started but cannot create a vhost (see /var/log/rabbitmq)"
log "rabbitmq: running"
