"""SadTalker inference as a plain torch/numpy library.

Nothing heavy happens at import time; import the stage modules you need
(`sadtalker_models.audio`, `sadtalker_models.renderer`, ...). See docs/DESIGN.md; the section
numbers (§) in docstrings refer to docs/SADTALKER_INFERENCE.md.
"""

__version__ = "0.1.0"
