"""pstn-sim: the stand-in phone network for development, tests and the demo."""
