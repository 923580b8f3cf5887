"""The cohort tool: questions across the case library, answered with read-only SQL."""
