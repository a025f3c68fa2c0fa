#!/usr/bin/env bash
# FerretDB v1.24 (MongoDB wire protocol) on 127.0.0.1:27017 with the SQLite backend,
# data in var/ferretdb/ of this clone. The binary is a machine-wide cache in /opt/faxbox/bin.
# Writes the URL to use into var/run/mongo.url.
# If FAXBOX_MONGO_URL is set and that server answers a ping, uses it and starts nothing.
# With --binary-only: only makes sure the binary is built, and starts nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdirs "$VAR/ferretdb/data" "$VAR/ferretdb/state"

URL_FILE="$RUN_DIR/mongo.url"
PID_FILE="$RUN_DIR/ferretdb.pid"
LOG_FILE="$LOG_DIR/ferretdb.log"
BUILD_LOG="$LOG_DIR/ferretdb-build.log"
MODULE=github.com/FerretDB/FerretDB
OUR_URL="mongodb://127.0.0.1:$MONGO_PORT/"
BINARY_ONLY=0
[[ "${1:-}" == --binary-only ]] && BINARY_ONLY=1
((BINARY_ONLY)) || rm -f "$URL_FILE"

# (Our own URL, e.g. from a sourced var/env, does not count: then FerretDB is managed here.)
if ((!BINARY_ONLY)) && [[ -n "${FAXBOX_MONGO_URL:-}" && "$FAXBOX_MONGO_URL" != "$OUR_URL" ]]; then
    if mongo_ping "$FAXBOX_MONGO_URL"; then
        log "ferretdb: FAXBOX_MONGO_URL=$FAXBOX_MONGO_URL answers a ping; not starting FerretDB"
        echo "$FAXBOX_MONGO_URL" >"$URL_FILE"
        exit 0
    fi
    warn "ferretdb: FAXBOX_MONGO_URL=$FAXBOX_MONGO_URL does not answer a ping; starting our own FerretDB"
fi

# synchronous(normal) with FerretDB's default WAL journal: a commit no longer waits for an
# fsync (each update statement is its own SQLite transaction; measured 1.3-1.6x more
# updates/s). The database stays consistent after a crash, but the last commits before a
# power loss (not a process crash) can be lost. Acceptable for a development server;
# production runs MongoDB.
ARGS=(
    --handler=sqlite
    "--sqlite-url=file:$VAR/ferretdb/data/?_pragma=synchronous(normal)"
    "--state-dir=$VAR/ferretdb/state"
    "--listen-addr=127.0.0.1:$MONGO_PORT"
    "--debug-addr=127.0.0.1:$FERRETDB_DEBUG_PORT"
    --telemetry=disable
    --log-level=info
)

# Our build carries two small fixes (see _build); its package name tells it from a plain one.
FERRETDB_PACKAGE=faxbox-local-id-pushdown
binary_ok() {
    local version
    [[ -x "$FERRETDB_BIN" ]] || return 1
    version="$("$FERRETDB_BIN" --version 2>/dev/null)" || return 1
    grep -q "^version: $FERRETDB_VERSION\$" <<<"$version" &&
        grep -q "^package: $FERRETDB_PACKAGE\$" <<<"$version"
}

# ---- binary -----------------------------------------------------------------------------
# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a binary that
# panics at start ("Invalid build/version/version.txt file content"): the module zip
# lacks the generated build/version/version.txt. So build from a copy of the module
# source with that file written, as upstream's `task gen-version` would.
#
# The copy also gets a one-line fix: v1.24.2's SQLite backend looks documents up by
# `_ferretdb_sjson->'$._id'` while the unique index is on `_ferretdb_sjson->"_id"`;
# SQLite matches index expressions literally, so every `_id` find, update and delete
# scanned the whole table (36 ms per lookup among 8,500 history documents, 17 ms per
# history upsert). `->'_id'` means the same path and uses the index: 0.6 ms per lookup,
# under 1 ms per upsert.
#
# And a second: the backend used that index only for a filter that is `_id` alone. A
# filter such as {_id: k, owner: o, state: "claimed"} (every compare-and-set of our
# ledgers and leases) read and decoded the whole collection, so each claim got slower
# with every fax ever sent; in the e2e benchmark, JSON decoding was 55% of FerretDB's
# CPU. A top-level `_id` equality is a conjunct of the filter, so the backend may select
# by it whatever else the filter says: the handler applies the whole filter to what
# comes back in any case (FilterIterator, FilterDocument).
build_binary() {
    command -v go >/dev/null 2>&1 || {
        err "ferretdb: Go not found (expected /usr/local/go/bin/go); cannot build FerretDB"
        return 1
    }
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod
    src='' tmp=''
    log "ferretdb: building $MODULE $FERRETDB_VERSION into $FERRETDB_BIN (log: $BUILD_LOG)"
    if ! _build >"$BUILD_LOG" 2>&1; then
        rm -rf "$tmp" "$FERRETDB_BIN.new"
        err "ferretdb: build failed; last lines of $BUILD_LOG:"
        tail -n 30 "$BUILD_LOG" >&2
        return 1
    fi
    rm -rf "$tmp"
}

# Runs with its output in the build log; `|| return 1` because set -e does not apply here.
_build() {
    src="$(go mod download -json "$MODULE@$FERRETDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || return 1
    [[ -d "$src" ]] || {
        echo "go mod download did not give a source directory for $MODULE@$FERRETDB_VERSION"
        return 1
    }
    tmp="$(mktemp -d /tmp/faxbox-ferretdb-build.XXXXXX)" || return 1
    cp -r "$src/." "$tmp/" && chmod -R u+w "$tmp" || return 1
    printf '%s\n' "$FERRETDB_VERSION" >"$tmp/build/version/version.txt" || return 1
    printf '%s\n' "$FERRETDB_PACKAGE" >"$tmp/build/version/package.txt" || return 1
    local meta="$tmp/internal/backends/sqlite/metadata/metadata.go"
    sed -i "s|IDColumn = DefaultColumn + \"->'\\\$._id'\"|IDColumn = DefaultColumn + \"->'_id'\"|" "$meta" || return 1
    grep -q "IDColumn = DefaultColumn + \"->'_id'\"" "$meta" || {
        echo "the _id lookup fix did not apply to $meta"
        return 1
    }
    local coll="$tmp/internal/backends/sqlite/collection.go"
    sed -i 's|if params.Filter.Len() == 1 {|if params.Filter.Len() >= 1 {|' "$coll" || return 1
    [[ "$(grep -c 'if params.Filter.Len() >= 1 {' "$coll")" == 2 ]] || {
        echo "the _id pushdown fix did not apply to both places in $coll"
        return 1
    }
    (cd "$tmp" && go build -trimpath -buildvcs=false -o "$FERRETDB_BIN.new" ./cmd/ferretdb) || return 1
    mv -f "$FERRETDB_BIN.new" "$FERRETDB_BIN" || return 1
    echo "built $FERRETDB_BIN: $("$FERRETDB_BIN" --version | head -n 1)"
}

ensure_binary() {
    binary_ok && return 0
    mkdir -p "$FAXBOX_BIN"
    # A build started by hand (go install ...) may be running: don't race it.
    local waited=0
    while pgrep -f "go (install|build).*(FerretDB/cmd/ferretdb|\./cmd/ferretdb)" >/dev/null; do
        ((waited % 30 == 0)) && log "ferretdb: waiting for a FerretDB build already running on this machine"
        sleep 2
        waited=$((waited + 2))
        ((waited < 1800)) || {
            err "ferretdb: the other FerretDB build is still running after 30 min"
            return 1
        }
    done
    binary_ok && return 0
    # Serialise builds between clones.
    exec 9>"$FAXBOX_BIN/.ferretdb-build.lock"
    flock 9
    if ! binary_ok; then
        if [[ -e "$FERRETDB_BIN" ]]; then
            warn "ferretdb: $FERRETDB_BIN exists but is not a working $FERRETDB_VERSION:"
            "$FERRETDB_BIN" --version 2>&1 | head -n 3 | sed 's/^/    /' >&2 || true
        fi
        build_binary || {
            flock -u 9
            return 1
        }
    fi
    flock -u 9
    binary_ok || {
        err "ferretdb: built binary does not report version $FERRETDB_VERSION: $("$FERRETDB_BIN" --version 2>&1 | head -n 3)"
        return 1
    }
}

ensure_binary || exit 1
# deploy/containers/build needs only the binary (for its FerretDB image).
((BINARY_ONLY)) && exit 0

# ---- process ----------------------------------------------------------------------------
# Go's collector ran at every 100 % heap growth and took ~20 % of FerretDB's CPU under
# write load (JSON documents decoded and encoded for every update). At 400 % the history
# benchmark's FerretDB CPU per event fell from 0.95 to 0.77 ms; the heap stays small.
FERRETDB_GOGC=400
# Same binary, arguments and collector setting (the debug port may have been moved to a
# random one).
no_debug() { sed 's/--debug-addr=[^ ]* //'; }
expected_cmd="$(no_debug <<<"$FERRETDB_BIN ${ARGS[*]} ")"
ours_running() {
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    pid_alive "$pid" && [[ "$(cmdline "$pid" | no_debug)" == "$expected_cmd" ]] &&
        # Not a process of a binary replaced since (a rebuild with other fixes).
        [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$FERRETDB_BIN")" ]] &&
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "GOGC=$FERRETDB_GOGC"
}

if ours_running && wire_ping "$MONGO_PORT"; then
    log "ferretdb: already running (pid $(cat "$PID_FILE"))"
    echo "$OUR_URL" >"$URL_FILE"
    exit 0
fi
# Ours with other arguments, or not answering: stop it (only if the pid is still FerretDB).
old_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
if pid_alive "$old_pid" && [[ "$(cmdline "$old_pid")" == "$FERRETDB_BIN "* ]]; then
    log "ferretdb: restarting (arguments changed or not answering)"
    stop_pid "$old_pid"
fi
rm -f "$PID_FILE"

# Another clone's FerretDB (or an older config of ours) on the port: stop it.
for pid in $(listen_pids "$MONGO_PORT"); do
    cmd="$(cmdline "$pid")"
    if [[ "$cmd" == "$FERRETDB_BIN "* ]]; then
        log "ferretdb: stopping FerretDB pid $pid on :$MONGO_PORT (${cmd#"$FERRETDB_BIN "})"
        stop_pid "$pid"
    else
        err "ferretdb: port $MONGO_PORT is held by pid $pid ($cmd), which is not our FerretDB."
        err "ferretdb: stop it, set FAXBOX_MONGO_URL to a server that answers a ping (it is then"
        err "ferretdb: used instead of starting FerretDB), or move ours with FAXBOX_LOCAL_MONGO_PORT."
        exit 1
    fi
done

# The metrics/debug HTTP port is not worth failing for (FerretDB exits if it is taken).
if port_open 127.0.0.1 "$FERRETDB_DEBUG_PORT"; then
    warn "ferretdb: 127.0.0.1:$FERRETDB_DEBUG_PORT is taken; FerretDB's debug/metrics port will be random"
    ARGS=("${ARGS[@]/#--debug-addr=*/--debug-addr=127.0.0.1:0}")
fi

log "ferretdb: starting (log: $LOG_FILE)"
cd "$VAR/ferretdb"
GOGC="$FERRETDB_GOGC" setsid "$FERRETDB_BIN" "${ARGS[@]}" </dev/null >>"$LOG_FILE" 2>&1 &
pid=$!
echo "$pid" >"$PID_FILE"
# Wait with the cheap ping (giving up at once if the process died), then check once with
# the real driver.
end=$((SECONDS + 30))
until wire_ping "$MONGO_PORT"; do
    if ! pid_alive "$pid" || ((SECONDS >= end)); then
        break
    fi
    sleep 0.2
done
if ! pid_alive "$pid" || ! mongo_ping "$OUR_URL"; then
    if pid_alive "$pid"; then
        err "ferretdb: pid $pid does not answer a ping (pymongo) on $OUR_URL after 30 s; last lines of $LOG_FILE:"
    else
        err "ferretdb: exited at start; last lines of $LOG_FILE:"
    fi
    tail -n 20 "$LOG_FILE" | cut -c1-400 >&2
    exit 1
fi
echo "$OUR_URL" >"$URL_FILE"
log "ferretdb: running (pid $(cat "$PID_FILE"))"
