"""SurgAgent: an agentic assistant for reviewing surgical videos.

from agent import SurgicalAgent
result = SurgicalAgent.from_settings().invoke("When does clipping start?", case="case.mp4")
"""
