"""Evaluation on SurgVLM-Bench-style tasks: loaders, parsers, metrics, runner, reports."""
