"""Faxbox portal: fax history, faxbox administration and the queue dashboard."""
