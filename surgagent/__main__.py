"""``python -m surgagent`` runs the ``surgagent`` command line."""

from surgagent.cli.main import main

main()
