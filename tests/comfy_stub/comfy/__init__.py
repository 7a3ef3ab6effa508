"""Stand-in for the parts of ComfyUI's ``comfy`` package that the SadTalker pack uses (tests only)."""
