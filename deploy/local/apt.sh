#!/usr/bin/env bash
# Debian packages the local system needs. Fast no-op when all are installed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
    rabbitmq-server
    dovecot-imapd
    dovecot-lmtpd
    libspandsp2
    libspandsp-dev
    sip-tester
    kamailio
    kamailio-tls-modules
    dnsmasq-base
    ghostscript
    libtiff-tools
    poppler-utils
    curl
    iproute2
    chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    log "apt: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "apt: must run as root to install: ${missing[*]}"
log "apt: installing ${missing[*]}"

# Keep the packages' maintainer scripts from starting the system-wide rabbitmq and
# dovecot (invoke-rc.d -> /etc/init.d here, there is no systemd): we run our own.
# policy-rc.d exit 101 = "action forbidden". Only ours is removed afterwards.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# temporary, from faxbox deploy/local/apt.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi

apt-get update -qq
apt-get install -y -q -o Dpkg::Options::=--force-confold "${missing[@]}"

# If anything still started the distribution's dovecot (config in /etc/dovecot),
# stop it: it would listen on 143/993 on every interface.
for pid in $(pgrep -x dovecot || true); do
    if ! cmdline "$pid" | grep -q -- '-c .*/var/dovecot/dovecot.conf'; then
        warn "apt: stopping the system dovecot (pid $pid) started by the package"
        stop_pid "$pid"
    fi
done
log "apt: done"
