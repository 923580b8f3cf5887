"""The agent: its public API (`SurgicalAgent`, `AnswerResult`), settings, model backends, prompts.

Users import from the root package: ``from surgagent import SurgicalAgent, AnswerResult``.
"""
