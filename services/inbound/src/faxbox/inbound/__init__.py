"""Faxbox inbound service."""
