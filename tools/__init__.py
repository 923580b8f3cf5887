"""Tools the planner calls about a case: video frames, detector, phases, perception, retrieval."""
