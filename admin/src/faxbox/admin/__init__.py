"""``faxbox``, the administration command line: on top of the libraries, validator and demo."""
