"""Faxbox history-writer: every fax recorded once in its account-month collection."""
