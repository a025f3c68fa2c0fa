"""Faxbox transmitter service."""
