"""Tools the planner calls about a case, one room (subpackage) per tool.

Rooms: `video` (cases, frames, ``look_at_frames``), `detector` (YOLO + ByteTrack), `phase`
(the temporal segmenter), `perception` (the perception VLM), `retrieval` (guideline
passages). Each is laid out alike: ``engine.py`` does the work, ``tools.py`` holds the
LangChain tools the planner calls, ``types.py`` the results they return, and training or
conversion code sits beside them. Shared by all: `errors`, `base` (evidence, time),
`cache` (`Case`, `CaseCache`), `vision` (the vision-backend protocol), `vocabulary`,
`answers` (answer parsing) and `results` (the tagged union of every tool result).
"""
