"""The ``surgagent`` command line: one typer app per noun (``surgagent phase ...``), and ``doctor``.

The top of the house: it may import every room, and no room imports it.
"""
