"""Sub-commands of the ``surgagent`` CLI, one typer app per noun (``surgagent phase ...``)."""
