"""Draw docs/images/sadtalker_expression_reference.png: the curves of an expression reference, before/after.

The portrait of the tests (``tests/data/media/art_0.png``) talks the 3-s English clip (seed 0) with no
expression reference, then with the smiling (``happy1.png``) and the sad picture (``sad.png``) at
strength 1. Three panels: the mouth coefficient (expression 0) over the speech loudness, the node's
'expression Δ' curve (each frame's L2 distance from the portrait's own expression), and each frame's
distance from today's prediction. With the stand-in weights the tests use (PIL drawing, no matplotlib)::

    .venv/bin/python scripts/plot_expression_reference.py [--weights-dir DIR] [--out PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "data" / "media"
sys.path.insert(0, str(REPO))

SCALE = 2                      # drawn at twice the size, then scaled down (smooth lines)
SIZE = (1200, 860)
COLORS = {"no reference": (225, 225, 225), "happy1.png, strength 1": (245, 166, 35),
          "sad.png, strength 1": (74, 144, 226)}


def compute(weights_dir: Path) -> dict:
    import cv2

    from sadtalker_models import pipeline
    from sadtalker_models.video import load_audio

    models = pipeline.load_models(weights_dir / "SadTalker_V0.0.2_256.safetensors", device="cpu",
                                  precision="fp32", cache=None)

    def face(name: str):
        image = cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB)
        return pipeline.prepare_face(models, image, preprocess="crop", landmark_backend="dlib")

    source = face("art_0.png")
    wave, rate = load_audio(str(MEDIA / "speech_en_16k_3s.wav"))
    runs = {"no reference": pipeline.audio_to_coefficients(models, source, wave, rate, seed=0)}
    for name in ("happy1.png", "sad.png"):
        runs[f"{name}, strength 1"] = pipeline.audio_to_coefficients(
            models, source, wave, rate, seed=0, expression_reference=face(name), expression_strength=1.0)
    today = runs["no reference"].coeffs
    mono = wave.mean(axis=0)
    step = rate // 25
    rms = np.array([np.sqrt(np.mean(mono[i * step:(i + 1) * step] ** 2)) for i in range(today.shape[0])])
    return {
        "rms": rms,
        "mouth": {k: r.coeffs[:, 0].numpy() for k, r in runs.items()},
        "expression": {k: np.asarray(r.curves()["expression"]) for k, r in runs.items()},
        "moved": {k: (r.coeffs[:, :64] - today[:, :64]).norm(dim=1).numpy() for k, r in runs.items()},
        "corr": {k: float(np.corrcoef(r.coeffs[:, 0].numpy(), rms)[0, 1]) for k, r in runs.items()},
    }


def draw(data: dict, out: Path, stand_in: bool = True) -> None:
    from PIL import Image, ImageDraw, ImageFont

    w, h = SIZE[0] * SCALE, SIZE[1] * SCALE
    image = Image.new("RGB", (w, h), (30, 30, 30))
    d = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15 * SCALE)
    small = ImageFont.load_default(size=13 * SCALE)
    title = ImageFont.load_default(size=20 * SCALE)
    d.text((20 * SCALE, 14 * SCALE), "Expression reference: the portrait talks 3 s of speech (seed 0) without and with "
           "a smiling / sad picture", fill=(240, 240, 240), font=title)
    x = 20 * SCALE
    for label, color in COLORS.items():
        d.line((x, 56 * SCALE, x + 26 * SCALE, 56 * SCALE), fill=color, width=3 * SCALE)
        d.text((x + 32 * SCALE, 48 * SCALE), label, fill=color, font=font)
        x += int(d.textlength(label, font=font)) + 70 * SCALE
    frames = len(data["rms"])
    panels = [
        ("mouth (expression 0) over the speech loudness (grey bars); the three lines coincide; correlation with "
         "the loudness: " + ", ".join(f"{v:.3f}" for v in data["corr"].values()), data["mouth"], True),
        ("the node's expression-offset curve: L2 distance of each frame's 64 expression coefficients from the "
         "portrait's own", data["expression"], False),
        ("distance of each frame's expression from the prediction without a reference (the same on every frame)",
         data["moved"], False),
    ]
    top, panel_h, gap = 80 * SCALE, 190 * SCALE, 52 * SCALE
    left, right = 70 * SCALE, w - 24 * SCALE
    for index, (caption, series, loudness) in enumerate(panels):
        y0 = top + index * (panel_h + gap) + 22 * SCALE
        y1 = y0 + panel_h - 22 * SCALE
        d.text((left, y0 - 22 * SCALE), caption, fill=(200, 200, 200), font=small)
        d.rectangle((left, y0, right, y1), outline=(80, 80, 80), width=SCALE)
        values = np.concatenate(list(series.values()))
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 1e-3, hi + 1e-3
        pad = (hi - lo) * 0.08
        lo, hi = lo - pad, hi + pad

        def at(i: int, v: float) -> tuple[float, float]:
            return left + (right - left) * i / (frames - 1), y1 - (y1 - y0) * (v - lo) / (hi - lo)

        for second in range(1, int(frames / 25) + 1):
            gx = left + (right - left) * second * 25 / (frames - 1)
            d.line((gx, y0, gx, y1), fill=(55, 55, 55), width=SCALE)
        if loudness:
            peak = float(data["rms"].max()) or 1.0
            for i, v in enumerate(data["rms"]):
                gx = left + (right - left) * i / (frames - 1)
                d.line((gx, y1, gx, y1 - (y1 - y0) * 0.9 * v / peak), fill=(70, 70, 70), width=6 * SCALE)
        for label, curve in series.items():
            d.line([at(i, float(v)) for i, v in enumerate(curve)], fill=COLORS[label], width=2 * SCALE,
                   joint="curve")
        for v, y in ((hi - pad, y0), (lo + pad, y1)):
            d.text((6 * SCALE, y - 8 * SCALE), f"{v:.4f}", fill=(160, 160, 160), font=small)
    if not stand_in:
        image.resize(SIZE, Image.LANCZOS).save(out, optimize=True)
        return
    d.text((left, h - 46 * SCALE), "Stand-in weights: their ReconNet gives nearly the same expression for every "
           "picture and their ExpNet's reference block is random, so the curves hardly move and rendered pixels are",
           fill=(170, 170, 170), font=small)
    d.text((left, h - 28 * SCALE), "noise. Shown is what holds for any weights: the mouth motion is untouched, the "
           "whole expression track shifts by one offset. Only the official weights show the smile or the frown.",
           fill=(170, 170, 170), font=small)
    image.resize(SIZE, Image.LANCZOS).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, help="SadTalker weights (default: stand-in weights written to "
                                                         "the test cache)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "sadtalker_expression_reference.png")
    args = parser.parse_args(argv)
    weights = args.weights_dir
    if weights is None:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import _cache_root
        from sadtalker_models.stand_in_weights import write_stand_in_files

        weights = write_stand_in_files(_cache_root() / "seed0", 0)
    data = compute(weights)
    for label in COLORS:
        print(f"{label}: mouth-loudness correlation {data['corr'][label]:.3f}, mean expression Δ "
              f"{data['expression'][label].mean():.4f}, moved {data['moved'][label].mean():.4f}")
    draw(data, args.out, stand_in=args.weights_dir is None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
