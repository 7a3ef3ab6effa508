"""``cv2.warpAffine`` (bilinear) in torch, for batches on any device.

The enhancer aligns faces to its 512 template and pastes the restored faces back with affine
warps; doing them in torch keeps the frames on the restorer's device (a GPU) instead of taking
each frame through OpenCV on one CPU core. Pixel centres sit at integer coordinates, as in
OpenCV, so the same matrix gives the same mapping (``tests/test_affine_warp.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine map (as ``cv2.invertAffineTransform``), float64."""
    a = np.asarray(matrix, dtype=np.float64)[:, :2]
    inverse = np.linalg.inv(a)
    return np.concatenate([inverse, -inverse @ np.asarray(matrix, dtype=np.float64)[:, 2:]], axis=1)


def warp_affine(images: torch.Tensor, matrices: Sequence[np.ndarray], size: tuple[int, int],
                border: Sequence[float] | None = None) -> torch.Tensor:
    """Warp each image with its matrix, as ``cv2.warpAffine(..., flags=INTER_LINEAR)``.

    Args:
        images: (N, C, H, W) float tensor.
        matrices: N (2, 3) maps from source pixels to output pixels (OpenCV's convention).
        size: output (width, height).
        border: C values outside the source (``BORDER_CONSTANT``), or None to repeat its edge
            pixels (``BORDER_REPLICATE``).
    Returns:
        (N, C, height, width) tensor on the images' device, in their dtype.
    """
    n, channels, height, width = images.shape
    if len(matrices) != n:
        raise ValueError(f"warp_affine got {len(matrices)} matrices for {n} images")
    out_w, out_h = size
    inverse = torch.as_tensor(np.stack([invert_affine(m) for m in matrices]), dtype=torch.float32,
                              device=images.device)
    ys = torch.arange(out_h, dtype=torch.float32, device=images.device).view(1, out_h, 1)
    xs = torch.arange(out_w, dtype=torch.float32, device=images.device).view(1, 1, out_w)
    src_x = inverse[:, 0, 0, None, None] * xs + inverse[:, 0, 1, None, None] * ys + inverse[:, 0, 2, None, None]
    src_y = inverse[:, 1, 0, None, None] * xs + inverse[:, 1, 1, None, None] * ys + inverse[:, 1, 2, None, None]
    grid = torch.stack([(2.0 * src_x + 1.0) / width - 1.0, (2.0 * src_y + 1.0) / height - 1.0], dim=-1)
    grid = grid.to(images.dtype)
    if border is None:
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    fill = torch.as_tensor(list(border), dtype=images.dtype, device=images.device).view(1, channels, 1, 1)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
