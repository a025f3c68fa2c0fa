"""Faxbox T.30 fax engine."""
