"""``python -m agent`` runs the ``surgagent`` command line."""

from agent.cli import main

main()
