"""Health of the container's mail server: an IMAP login with a SELECT, and an SMTP NOOP."""

import imaplib
import os
import smtplib

host = "127.0.0.1"
imap = imaplib.IMAP4(host, int(os.environ["MAIL_IMAP_PORT"]), timeout=4)
imap.login("health@faxbox.test", os.environ["MAIL_PASSWORD"])
assert imap.select("INBOX")[0] == "OK"
imap.logout()
with smtplib.SMTP(host, int(os.environ["MAIL_SMTP_PORT"]), timeout=4) as smtp:
    assert smtp.noop()[0] == 250
