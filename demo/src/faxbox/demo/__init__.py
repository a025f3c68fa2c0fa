"""The demo tenant and ``faxbox demo``: one real fax from user A to user B, shown step by step."""
