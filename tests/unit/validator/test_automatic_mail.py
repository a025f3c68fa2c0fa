"""The one rule for mail sent by machines (moved here from the notifier, which no longer
reads the original mail): such a mail is neither faxed nor answered."""

from __future__ import annotations

import pytest

from faxbox.validator.mime import parse_mail


@pytest.mark.parametrize(
    ("headers", "automatic"),
    [
        (b"From: a@x.com\r\nSubject: hi\r\n", False),
        (b"From: a@x.com\r\nAuto-Submitted: no\r\n", False),
        (b"From: a@x.com\r\nAuto-Submitted: auto-generated\r\n", True),
        (b"From: a@x.com\r\nPrecedence: bulk\r\n", True),
        (b"From: a@x.com\r\nList-Id: <l.x.com>\r\n", True),
        (b"From: a@x.com\r\nList-Unsubscribe: <mailto:leave@l.x.com>\r\n", True),
        (b"From: MAILER-DAEMON@x.com\r\n", True),
        (b"Return-Path: <>\r\nFrom: a@x.com\r\n", True),
        (b"From: a@x.com\r\nContent-Type: multipart/report; report-type=delivery-status\r\n", True),
    ],
)
def test_automatic_mail_is_recognised(headers: bytes, automatic: bool) -> None:
    assert (parse_mail(headers + b"\r\n").automatic is not None) is automatic
