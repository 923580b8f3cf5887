"""The LangGraph graphs: case review (planner + tools) and the direct-VLM baseline."""
