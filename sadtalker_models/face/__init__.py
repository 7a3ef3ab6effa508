"""Face pipeline: landmarks, crop modes, 3DMM extraction of a source image, paste-back."""
