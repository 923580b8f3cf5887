"""Prompt texts, kept as package files so they can be read and edited without touching code.

text = load_prompt("planner_system")
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["load_prompt"]


@functools.cache
def load_prompt(name: str) -> str:
    """Return the text of ``agent/prompts/<name>.md``.

    Raises:
        FileNotFoundError: If there is no such prompt file.
    """
    return resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
