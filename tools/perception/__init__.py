"""The perception room: the perception VLM asked about frames in SurgVLM's task styles.

``engine`` (prompts, the call, parsing, the cross-check against detector and segmenter),
``tools`` (``ask_perception``), ``types``; the prompt templates are package files in
``prompts/``.
"""
