"""Faxbox mail-poller: takes emails from IMAP intake mailboxes into the pipeline, exactly once.

For every message in a watched folder: the raw bytes go to GridFS (intake bucket),
``MailReceived`` is published with a broker confirm, and only then is the message moved
to the processed folder. An intake ledger in MongoDB makes a restart at any point
publish nothing twice; a lease per mailbox keeps one active poller per mailbox.
"""
