#!/usr/bin/env bash
# The local mail server: deploy/local/mailrelay.py on 127.0.0.1:2525 (SMTP, no auth: the
# MX and the notifier's smarthost) and 127.0.0.1:2587 (submission: AUTH PLAIN/LOGIN
# checked by Dovecot's auth service, so the users and passwords of var/dovecot/users;
# loopback only, no TLS). A mail from a session that logged in gets
# "Authentication-Results: relay.faxbox.test; auth=pass smtp.auth=<user>" on top; any
# such header claiming relay.faxbox.test is stripped from every mail first. Mail for
# *@faxbox.test goes to that Dovecot user over LMTP, mail for the demo fax realm
# *@fax.faxbox.test to the intake mailbox fax@faxbox.test (and the e2e tests' realm
# *@e2e.faxbox.test to e2e@faxbox.test), anything else to var/mail/outbound/*.eml
# (there is no internet). Log var/log/mailrelay.log.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE="$RUN_DIR/mailrelay.pid"
LOG_FILE="$LOG_DIR/mailrelay.log"
SCRIPT="$DEPLOY_DIR/mailrelay.py"
ARGS=(
    "$SCRIPT" --port "$SMTP_PORT" --lmtp-port "$LMTP_PORT"
    --local-domain faxbox.test --catch-all fax.faxbox.test=fax@faxbox.test
    --catch-all e2e.faxbox.test=e2e@faxbox.test
    --sink "$VAR/mail-outbound"
    --submission-port "$SUBMISSION_PORT" --dovecot-auth "$DOVECOT_BASE/auth-client"
    --authserv-id "$RELAY_AUTHSERV_ID"
)
expected="$PY ${ARGS[*]} "
# A changed script restarts the relay too.
script_sum="$(md5sum "$SCRIPT" | cut -c1-32)"

smtp_ok() {
    "$PY" - "$SMTP_PORT" "$SUBMISSION_PORT" <<'PYEOF' >/dev/null 2>&1
import smtplib, sys
for port in sys.argv[1:]:
    with smtplib.SMTP("127.0.0.1", int(port), timeout=5) as s:
        assert s.noop()[0] == 250
PYEOF
}
ours_running() {
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    pid_alive "$pid" && [[ "$(cmdline "$pid")" == "$expected" ]] &&
        [[ "$(cat "$RUN_DIR/mailrelay.sum" 2>/dev/null)" == "$script_sum" ]]
}

if ours_running && smtp_ok; then
    log "mailrelay: already running (pid $(cat "$PID_FILE"))"
    exit 0
fi
old="$(cat "$PID_FILE" 2>/dev/null || true)"
if pid_alive "$old" && [[ "$(cmdline "$old")" == *mailrelay.py* ]]; then
    log "mailrelay: restarting (arguments changed or not answering)"
    stop_pid "$old"
fi
for port in "$SMTP_PORT" "$SUBMISSION_PORT"; do
    for pid in $(listen_pids "$port"); do
        cmd="$(cmdline "$pid")"
        [[ "$cmd" == *mailrelay.py* ]] || die "mailrelay: port $port is held by pid $pid ($cmd); stop it or set FAXBOX_LOCAL_SMTP_PORT / FAXBOX_LOCAL_SUBMISSION_PORT"
        log "mailrelay: stopping another clone's relay (pid $pid)"
        stop_pid "$pid"
    done
done

setsid "$PY" "${ARGS[@]}" </dev/null >>"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"
echo "$script_sum" >"$RUN_DIR/mailrelay.sum"
if ! wait_until 15 smtp_ok; then
    err "mailrelay: not answering SMTP on 127.0.0.1:$SMTP_PORT; last lines of $LOG_FILE:"
    tail -n 20 "$LOG_FILE" >&2
    exit 1
fi
log "mailrelay: running (pid $(cat "$PID_FILE"), SMTP 127.0.0.1:$SMTP_PORT, submission 127.0.0.1:$SUBMISSION_PORT)"
