"""The SadTalker networks, one module per network; parameter names follow the official checkpoints."""
