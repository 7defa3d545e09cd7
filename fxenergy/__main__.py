"""``python -m fxenergy`` runs the CLI."""

from fxenergy.cli import main

raise SystemExit(main())
