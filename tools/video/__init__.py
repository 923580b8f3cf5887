"""The video room: cases and their frames, and the planner's ``look_at_frames`` tool.

``engine`` opens, samples and indexes cases; ``decode`` decodes videos and frame folders;
``opening`` turns a path into a `Case` (hash, probe, notes); ``tools`` and ``types`` as in
every room.
"""
