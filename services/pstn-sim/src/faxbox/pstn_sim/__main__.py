"""``python -m faxbox.pstn_sim`` runs the simulator; ``... originate`` asks a running one."""

import sys

from faxbox.pstn_sim.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
