"""Prompt templates of the tools (package data)."""
