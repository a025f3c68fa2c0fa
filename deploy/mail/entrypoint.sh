#!/bin/sh
# Dovecot (IMAP on MAIL_LISTEN:MAIL_IMAP_PORT, LMTP on 127.0.0.1:MAIL_LMTP_PORT) in the
# background, then the SMTP relay in the foreground (the container's main process):
# mail to MAIL_LOCAL_DOMAINS goes to that mailbox, mail to a MAIL_CATCH_ALL domain
# (domain=mailbox, space-separated) to the one mailbox, anything else to /var/mail/outbound.
set -eu
: "${MAIL_PASSWORD:?MAIL_PASSWORD is required (every mailbox's password)}"
case "$MAIL_PASSWORD" in *[!A-Za-z0-9._~-]*)
    echo "MAIL_PASSWORD may only have letters, digits and - _ . ~" >&2
    exit 2
    ;;
esac
state=/var/lib/faxbox-mail
mkdir -p "$state/run" "$state/state"
umask 077
printf '%s\n' "$MAIL_PASSWORD" >"$state/password"
user="$(id -un)"
cat >"$state/dovecot.conf" <<CONF
# Written by faxbox-mail-entrypoint at container start. Development only: plain-text
# logins, one password for every mailbox.
base_dir = $state/run
state_dir = $state/state
log_path = /dev/stderr
protocols = imap lmtp
listen = $MAIL_LISTEN
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = $user
default_internal_group = $user
default_login_user = $user
mail_location = maildir:/var/mail/faxbox/%d/%n
passdb {
  driver = static
  args = password=$MAIL_PASSWORD
}
userdb {
  driver = static
  args = uid=$user gid=$user home=/var/mail/faxbox/%d/%n allow_all_users=yes
}
# Without root nothing can chroot: the login processes and anvil run unjailed.
service imap-login {
  chroot =
  inet_listener imap {
    port = $MAIL_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $MAIL_LMTP_PORT
  }
}
service anvil {
  chroot =
}
protocol lmtp {
  auth_username_format = %Lu
}
protocol imap {
  mail_max_userip_connections = 100
}
CONF
dovecot -c "$state/dovecot.conf"

set -- --host "$MAIL_LISTEN" --port "$MAIL_SMTP_PORT" --lmtp-port "$MAIL_LMTP_PORT" \
    --sink /var/mail/outbound --password-file "$state/password"
for domain in $MAIL_LOCAL_DOMAINS; do set -- "$@" --local-domain "$domain"; done
for route in $MAIL_CATCH_ALL; do set -- "$@" --catch-all "$route"; done
exec python3 /usr/local/lib/faxbox/mailrelay.py "$@"
