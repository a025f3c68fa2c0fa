"""Faxbox notifier: every fax outcome reaches its user once, by mail."""
