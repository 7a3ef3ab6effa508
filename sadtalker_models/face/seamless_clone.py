"""Batched Poisson blending in torch, equal to OpenCV's ``seamlessClone(..., NORMAL_CLONE)``.

The paste-back (§15) blends each rendered face into the picture with an all-255 mask centred on
the paste box. What OpenCV computes for that mask, reduced to the equation it solves:

* The mask's outer ring of one pixel is dropped, so the work region is the box without its
  outermost ring: ``R = box shrunk by 1`` (``H = bh - 2`` rows, ``W = bw - 2`` columns), the same
  pixels in the patch and in the destination (the centre ``((x1+x2)//2, (y1+y2)//2)`` lines them
  up exactly for every size, odd or even).
* The mask inside ``R`` is eroded three times by a 3x3 square; the dropped ring around it counts
  as zero, so the eroded mask ``m`` is 1 on ``R`` less a band of 3 pixels and 0 on that band.
* Guidance field (forward differences): ``g = m * grad(patch) + (1 - m) * grad(destination)``.
* The ring of ``R`` keeps the destination (Dirichlet boundary); on the ``(H-2) x (W-2)`` inside,
  ``laplacian(u) = div(g)`` (5-point Laplacian, backward-difference divergence), solved exactly
  with a 2-D discrete sine transform (type I), whose eigenvalues are
  ``2 cos(pi k / (n + 1)) - 2`` per axis.
* The solution is clamped to 0..255 and truncated (not rounded) to uint8.

So only ``box`` shrunk by 2 pixels ever changes; its outer 2-pixel ring and everything outside
keep the destination. Since the 5-point Laplacian is ``div(grad)``, the solution is
``u = D + v`` with ``laplacian(v) = div(m * grad(P - D))`` and ``v = 0`` on the boundary, which
is what :class:`SeamlessCloner` solves: ``div(m * grad(D))`` is computed once per clip (or once per
frame when each frame brings its own destination), the sine-transform matrices and eigenvalue
denominators once per box, and every frame is a handful of element-wise operations and four
sine transforms, batched over frames and colour channels.

The sine transform is done either by matrix products with the ``n x n`` DST-I matrix
(``method="matmul"``: exact in float32 on CPUs, O(n^3) but BLAS-fast) or with ``torch.fft.rfft`` on
a zero-padded length ``2 (n + 1)`` (``method="fft"``, O(n^2 log n); immune to TF32 matmul
settings on CUDA). ``"auto"`` takes FFT on CUDA and matrix products elsewhere.

Equality: within 1 uint8 level of ``cv2.seamlessClone`` (OpenCV 5.1) on real pictures, see
``tests/test_seamless_clone.py``. The pixels that differ are OpenCV's float32 error: it solves for
the pixels themselves, and its low frequencies (amplified by the smallest eigenvalues) come out a
fraction of a level off; with the patch equal to the picture (exact answer: the picture) OpenCV
returns one level less on 31% of the values of a 1200x1400 box in a 4K picture, this module the
picture itself. Our float32 result differs from our float64 one on under 0.1% of the values.
Inside a 600x700 box of a 1080p picture 13% of the values differ from OpenCV by 1 (18% in 4K).

Speed per frame, 1080p picture with a 600x700 box, batch 2 (Intel Xeon Processor, a
Sapphire-Rapids-class 2-core with AMX, shared with other jobs so +-30%): ``cv2.seamlessClone``
0.43 s; this module on the CPU with ``matmul`` 0.18-0.21 s, with ``fft`` 0.26-0.35 s (the FFT
length ``2 * 598`` has the prime factor 199). 4K with a 1200x1400 box: OpenCV 3.2 s, ``matmul``
1.3-1.5 s, ``fft`` 1.6-2.3 s. ``benchmarks/bench_paste.py`` prints the table (CUDA included;
not yet measured on a GPU, where the CUDA test of tests/test_seamless_clone.py also has yet to run).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: The mask's erosion: three 3x3 erosions from a zero ring = a band this wide keeps the destination's gradient.
ERODED_BAND = 3

#: Float bytes per frame a chunk's temporaries may take (the batch is cut into chunks under it).
CHUNK_BYTES = 512 * 2**20

METHODS = ("auto", "matmul", "fft")


def dst1_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The unnormalised DST-I matrix ``S[k, j] = sin(pi (k+1) (j+1) / (n+1))``, (n, n), symmetric.

    ``S @ S = (n + 1) / 2 * I``. Built in float64 (the integer product is reduced modulo
    ``2 (n + 1)`` first) and cast to ``dtype``.
    """
    k = torch.arange(1, n + 1, dtype=torch.int64)
    phase = (k[:, None] * k[None, :]) % (2 * (n + 1))
    return torch.sin(phase.double() * (math.pi / (n + 1))).to(dtype=dtype, device=device)


def dst1_fft(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unnormalised DST-I of ``x`` along ``dim`` (same result as multiplying by :func:`dst1_matrix`).

    With ``x`` placed at 1..n of ``2 (n + 1)`` zeros, the imaginary part of its real FFT at
    frequencies 1..n is minus the transform.
    """
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 1
    shifted = torch.cat([x.new_zeros(shape), x], dim)
    return torch.fft.rfft(shifted, n=2 * (n + 1), dim=dim).imag.narrow(dim, 1, n).neg()


def eroded_mask(h: int, w: int, band: int = ERODED_BAND) -> np.ndarray:
    """(h, w) float32 mask of the work region: 1 inside, 0 on a ``band``-pixel border."""
    m = np.zeros((h, w), np.float32)
    if h > 2 * band and w > 2 * band:
        m[band:h - band, band:w - band] = 1.0
    return m


def masked_divergence(image: torch.Tensor, mask_x: torch.Tensor, mask_y: torch.Tensor) -> torch.Tensor:
    """``div(m * grad(image))`` on the inside of the work region.

    Args:
        image: (..., H, W) float.
        mask_x: (H, W - 1) mask at the forward x-differences; mask_y: (H - 1, W) at the y-differences.
    Returns:
        (..., H - 2, W - 2): backward differences of the masked forward differences.
    """
    gx = (image[..., :, 1:] - image[..., :, :-1]) * mask_x
    gy = (image[..., 1:, :] - image[..., :-1, :]) * mask_y
    return (gx[..., 1:-1, 1:] - gx[..., 1:-1, :-1]) + (gy[..., 1:, 1:-1] - gy[..., :-1, 1:-1])


def _as_uint8_tensor(x: Any, what: str, device: torch.device, own: bool = False) -> torch.Tensor:
    """``x`` (numpy or torch, uint8) as a tensor on ``device``; with ``own``, never sharing memory with ``x``."""
    source = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if source.dtype != torch.uint8:
        raise ValueError(f"The {what} must be uint8, got {source.dtype}.")
    t = source.to(device)
    return t.clone() if own and t.data_ptr() == source.data_ptr() else t


class SeamlessCloner:
    """``cv2.seamlessClone(patch, destination, all-255 mask, box centre, NORMAL_CLONE)`` for batches.

    Everything fixed for a clip is computed here once: the box geometry, the eroded mask, the
    sine-transform matrices and eigenvalue denominators, and the destination's part of the
    right-hand side.

    Args:
        destination: (H0, W0, 3) uint8 picture (numpy or torch; channels are independent, so RGB or
            BGR alike); frames that bring their own destination only need it for its size.
        box: (x1, y1, x2, y2) where the patch goes: ``0 <= x1``, ``x2 <= W0``, at least 3x3.
        device: where to compute (the render device); default the destination's device.
        method: ``"matmul"``, ``"fft"`` or ``"auto"`` (FFT on CUDA, matrix products elsewhere).
        dtype: float dtype of the solve (float32 matches OpenCV; float64 for reference runs).
    """

    def __init__(self, destination: Any, box: tuple[int, int, int, int], device: torch.device | str | None = None,
                 method: str = "auto", dtype: torch.dtype = torch.float32) -> None:
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
        dest_device = destination.device if isinstance(destination, torch.Tensor) else torch.device("cpu")
        self.device = torch.device(device) if device is not None else dest_device
        if method == "auto":
            method = "fft" if self.device.type == "cuda" else "matmul"
        self.method = method
        self.dtype = dtype
        with torch.no_grad():
            self.destination = _as_uint8_tensor(destination, "destination", self.device, own=True)
            if self.destination.ndim != 3 or self.destination.shape[2] != 3:
                raise ValueError(f"The destination must be (H, W, 3) uint8, got {tuple(self.destination.shape)}.")
            h0, w0 = self.destination.shape[:2]
            x1, y1, x2, y2 = (int(v) for v in box)
            if not (0 <= x1 and 0 <= y1 and x2 <= w0 and y2 <= h0):
                raise ValueError(f"The box {(x1, y1, x2, y2)} is not inside the {w0}x{h0} destination.")
            if x2 - x1 < 3 or y2 - y1 < 3:
                raise ValueError(f"The box {(x1, y1, x2, y2)} is too small to blend into (3x3 at least).")
            self.box = (x1, y1, x2, y2)
            self.patch_size = (y2 - y1, x2 - x1)                 # (bh, bw)
            # work region R = box less its outer ring; the solved inside = R less its ring
            self.work = (slice(y1 + 1, y2 - 1), slice(x1 + 1, x2 - 1))
            self.inside = (slice(y1 + 2, y2 - 2), slice(x1 + 2, x2 - 2))
            h, w = y2 - y1 - 2, x2 - x1 - 2
            nh, nw = h - 2, w - 2
            self._empty = nh < 1 or nw < 1 or h <= 2 * ERODED_BAND or w <= 2 * ERODED_BAND
            if self._empty:                                     # the eroded mask is empty: nothing changes
                return
            m = torch.from_numpy(eroded_mask(h, w)).to(self.device, dtype)
            self._mask_x, self._mask_y = m[:, :-1].contiguous(), m[:-1, :].contiguous()
            lam_y = 2.0 * torch.cos(torch.arange(1, nh + 1, dtype=torch.float64) * (math.pi / (nh + 1))) - 2.0
            lam_x = 2.0 * torch.cos(torch.arange(1, nw + 1, dtype=torch.float64) * (math.pi / (nw + 1))) - 2.0
            # the inverse 2-D DST-I is the forward one times 4 / ((nh + 1)(nw + 1)): folded in here
            scale = 4.0 / ((nh + 1) * (nw + 1))
            self._inv_den = (scale / (lam_y[:, None] + lam_x[None, :])).to(self.device, dtype)
            if method == "matmul":
                self._s_h = dst1_matrix(nh, dtype, self.device)
                self._s_w = dst1_matrix(nw, dtype, self.device)
            self._dest_rhs, self._dest_inside = self._destination_parts(self.destination[None])
            # bytes of float temporaries per frame (about ten (3, h, w) arrays; the FFT's are twice as long)
            per_frame = 3 * h * w * torch.finfo(dtype).bits // 8 * (10 if method == "matmul" else 20)
            self._chunk = max(1, CHUNK_BYTES // per_frame)

    # ----------------------------------------------------------------- pieces

    def _work_region(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H0, W0, 3) uint8 -> (B, 3, h, w) float: the work region R, channels first."""
        return images[:, self.work[0], self.work[1]].permute(0, 3, 1, 2).to(self.dtype)

    def _destination_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H0, W0, 3) uint8 destinations -> ``div(m * grad(D))`` and D's solved inside, both
        (B, 3, nh, nw) float."""
        region = self._work_region(images)
        return masked_divergence(region, self._mask_x, self._mask_y), region[..., 1:-1, 1:-1]

    def _dst2(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised 2-D DST-I over the last two dims of (..., nh, nw)."""
        if self.method == "matmul":
            return torch.matmul(self._s_h, torch.matmul(x, self._s_w))
        return dst1_fft(dst1_fft(x, -1), -2)

    def _solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """(B, 3, nh, nw) right-hand side -> the solution ``v`` with zero boundary, same shape."""
        return self._dst2(self._dst2(rhs) * self._inv_den)

    # ----------------------------------------------------------------- call

    def __call__(self, patches: Any, destinations: Any = None) -> torch.Tensor:
        """Blend a batch of patches.

        Args:
            patches: (B, bh, bw, 3) uint8 (numpy or torch), ``(bh, bw)`` the box's size.
            destinations: optional (B, H0, W0, 3) uint8, one destination per frame (a background
                that changes); default the destination given at construction for every frame.
        Returns:
            (B, H0, W0, 3) uint8 on ``self.device``: the destination(s), blended inside the box.
        """
        with torch.no_grad():
            p = _as_uint8_tensor(patches, "patches", self.device)
            bh, bw = self.patch_size
            if p.ndim != 4 or tuple(p.shape[1:]) != (bh, bw, 3):
                raise ValueError(f"The patches must be (B, {bh}, {bw}, 3) uint8 for this box, got {tuple(p.shape)}.")
            if destinations is None:
                out = self.destination.expand(p.shape[0], -1, -1, -1).clone()
            else:
                want = (p.shape[0],) + tuple(self.destination.shape)
                if tuple(destinations.shape) != want:
                    raise ValueError(f"The destinations must be ({', '.join(map(str, want))}) uint8, got "
                                     f"{tuple(destinations.shape)}.")
                out = _as_uint8_tensor(destinations, "destinations", self.device, own=True)   # written into
            if self._empty or p.shape[0] == 0:
                return out
            for start in range(0, p.shape[0], self._chunk):
                stop = min(start + self._chunk, p.shape[0])
                self._blend_into(out[start:stop], p[start:stop], destinations is not None)
            return out

    def _blend_into(self, out: torch.Tensor, patches: torch.Tensor, own_destinations: bool) -> None:
        """Solve for one chunk and write the inside of the box of ``out`` (B, H0, W0, 3) in place."""
        dest_rhs, dest_inside = self._destination_parts(out) if own_destinations else \
            (self._dest_rhs, self._dest_inside)
        rhs = masked_divergence(patches[:, 1:-1, 1:-1].permute(0, 3, 1, 2).to(self.dtype), self._mask_x, self._mask_y)
        v = self._solve(rhs.sub_(dest_rhs))
        # OpenCV truncates after clamping to 0..255: clamp, then the cast truncates (= floor, as u >= 0)
        u = v.add_(dest_inside).clamp_(0, 255).to(torch.uint8)
        out[:, self.inside[0], self.inside[1]] = u.permute(0, 2, 3, 1)
