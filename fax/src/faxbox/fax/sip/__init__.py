"""SIP over UDP for fax calls: signalling (``message``, ``ua``) and media (``rtp``, ``udptl``)."""
