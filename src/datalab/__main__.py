"""``python -m datalab`` runs the CLI."""

from datalab.cli import main

main()
