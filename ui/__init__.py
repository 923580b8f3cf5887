"""The web case-review app (``surgagent serve``); needs the ``ui`` extra (Gradio)."""
