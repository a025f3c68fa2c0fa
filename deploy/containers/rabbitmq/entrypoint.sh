#!/bin/sh
# Writes rabbitmq.conf from the environment, then runs the command (rabbitmq-server):
#   RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS   the one user (as the official image)
#   RABBITMQ_NODE_IP_ADDRESS, RABBITMQ_NODE_PORT   AMQP (read by rabbitmq-server itself)
#   RABBITMQ_MANAGEMENT_PORT, RABBITMQ_PROMETHEUS_PORT   HTTP listeners (15672, 15692)
# Listeners bind RABBITMQ_NODE_IP_ADDRESS (default every interface). When that is
# 127.0.0.1 (host networking), Erlang distribution stays on loopback too; its ports are
# RabbitMQ's own variables (ERL_EPMD_PORT, RABBITMQ_DIST_PORT, RABBITMQ_NODENAME).
set -eu
ip="${RABBITMQ_NODE_IP_ADDRESS:-0.0.0.0}"
{
    echo "# Written by faxbox-rabbitmq-entrypoint at container start."
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
        echo "default_user = $RABBITMQ_DEFAULT_USER"
        echo "default_pass = ${RABBITMQ_DEFAULT_PASS:?RABBITMQ_DEFAULT_PASS is required with RABBITMQ_DEFAULT_USER}"
        # The default user may connect from other hosts (other containers).
        echo "loopback_users = none"
    fi
    echo "management.tcp.ip = $ip"
    echo "management.tcp.port = ${RABBITMQ_MANAGEMENT_PORT:-15672}"
    echo "prometheus.tcp.ip = $ip"
    echo "prometheus.tcp.port = ${RABBITMQ_PROMETHEUS_PORT:-15692}"
} >/etc/rabbitmq/rabbitmq.conf
if [ "$ip" = 127.0.0.1 ]; then
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} -kernel inet_dist_use_interface {127,0,0,1}"
fi
exec "$@"
