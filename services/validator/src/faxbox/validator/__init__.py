"""Faxbox validator: checks outgoing documents and renders them for fax."""
