import sys

from faxbox.admin.cli import main

# Guarded: check-email's rendering workers import the parent's main module again.
if __name__ == "__main__":
    sys.exit(main())
