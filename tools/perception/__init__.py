"""The perception room: the perception VLM asked about frames in SurgVLM's task styles."""
