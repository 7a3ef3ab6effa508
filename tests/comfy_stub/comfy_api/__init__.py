"""Stand-in for ComfyUI's ``comfy_api`` package: just the native VIDEO type the pack returns."""
