"""The fax line: a fax engine moved over a SIP call's media (``pump``)."""
