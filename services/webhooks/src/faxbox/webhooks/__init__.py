"""Faxbox webhooks: fax events told to each account's URLs, signed, at least once."""
