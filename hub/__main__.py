"""``python -m hub`` runs the same command line as ``hub``."""

from hub.cli import main

raise SystemExit(main())
