# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Shared helpers for deploy/local/*. Source it; do not run it.
# Everything per clone lives under $REPO/var (git-ignored); /opt/faxbox/bin is a
# machine-wide cache shared by all clones (the FerretDB binary).

set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY_DIR/../.." && pwd)"
VAR="$REPO/var"
RUN_DIR="$VAR/run"
LOG_DIR="$VAR/log"
FAXBOX_BIN=/opt/faxbox/bin
export PATH="/usr/local/go/bin:$FAXBOX_BIN:$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive
export UV_PYTHON_DOWNLOADS=never
PY="$REPO/.venv/bin/python"

# Local endpoints, loopback only. RabbitMQ is the machine's one node (fixed ports);
# FerretDB and Dovecot are per clone and their ports can be moved if the defaults are
# taken by something that is not ours (FAXBOX_LOCAL_MONGO_PORT, FAXBOX_LOCAL_IMAP_PORT).
AMQP_PORT=5672
RABBIT_MGMT_PORT=15672
RABBIT_PROM_PORT=15692
MONGO_PORT="${FAXBOX_LOCAL_MONGO_PORT:-27017}"
FERRETDB_DEBUG_PORT="${FAXBOX_LOCAL_FERRETDB_DEBUG_PORT:-8088}"
IMAP_PORT="${FAXBOX_LOCAL_IMAP_PORT:-1143}"
LMTP_PORT="${FAXBOX_LOCAL_LMTP_PORT:-1124}"
SMTP_PORT="${FAXBOX_LOCAL_SMTP_PORT:-2525}"
SUBMISSION_PORT="${FAXBOX_LOCAL_SUBMISSION_PORT:-2587}"
# The id the relay writes into Authentication-Results; var/env trusts it.
RELAY_AUTHSERV_ID=relay.faxbox.test
# Dovecot's base_dir holds unix sockets (108-byte path limit): var/run/dovecot when
# short enough, else a per-clone directory under /run.
DOVECOT_BASE="$RUN_DIR/dovecot"
if ((${#DOVECOT_BASE} > 60)); then
    DOVECOT_BASE="/run/faxbox-dovecot-$(printf '%s' "$REPO" | md5sum | cut -c1-12)"
fi
FERRETDB_VERSION=v1.24.2
FERRETDB_BIN="$FAXBOX_BIN/ferretdb"

if [[ -t 1 ]]; then _B=$'\e[1m' _R=$'\e[31m' _Y=$'\e[33m' _N=$'\e[0m'; else _B='' _R='' _Y='' _N=''; fi
log() { printf '%s==>%s %s\n' "$_B" "$_N" "$*"; }
warn() { printf '%sWARN:%s %s\n' "$_Y" "$_N" "$*" >&2; }
err() { printf '%sERROR:%s %s\n' "$_R" "$_N" "$*" >&2; }
die() {
    err "$*"
    exit 1
}

mkdirs() { mkdir -p "$RUN_DIR" "$LOG_DIR" "$@"; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# listen_pids PORT: pids of processes listening on TCP PORT (any address).
listen_pids() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

# pid_alive PID: process exists and is not a zombie.
pid_alive() {
    [[ -n "${1:-}" && -d "/proc/$1" ]] || return 1
    local state
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]]
}

# cmdline PID: the process's command line with spaces between arguments.
cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid="$1" secs="${2:-10}" i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    warn "pid $pid did not stop after ${secs}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# wait_until SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds.
wait_until() {
    local secs="$1" end
    shift
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

# mongo_ping URL: true when a MongoDB-wire server at URL answers {ping: 1}.
mongo_ping() {
    [[ -x "$PY" ]] || return 1
    "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys
from pymongo import MongoClient
c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=1500, connectTimeoutMS=1500)
c.admin.command("ping")
EOF
}

# wire_ping PORT: fast (~30 ms) MongoDB-wire {ping: 1} to 127.0.0.1:PORT with the
# standard library only (OP_MSG); true when the answer has ok: 1.0.
wire_ping() {
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import socket, struct, sys
def cstr(s): return s.encode() + b"\0"
doc = b"\x10" + cstr("ping") + struct.pack("<i", 1)
doc += b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin")
doc = struct.pack("<i", len(doc) + 5) + doc + b"\0"
body = struct.pack("<I", 0) + b"\0" + doc
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2) as s:
    s.settimeout(2)
    s.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body)
    reply = s.recv(65536)
assert b"\x01ok\x00" + struct.pack("<d", 1.0) in reply, reply
EOF
}

# write_if_changed FILE: write stdin to FILE only when the content differs.
# Returns 0 when the file changed, 1 when it was already identical.
write_if_changed() {
    local file="$1" tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
    return 0
}
