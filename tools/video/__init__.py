"""The video room: cases and their frames, and the planner's ``look_at_frames`` tool."""
