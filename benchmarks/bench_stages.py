"""Stage budget (a script, not a test): seconds of compute per second of video, stage by stage.

The whole job through the library, on deterministic stand-in weights (the same networks and
sizes as the official ones, so the same compute), timed per stage:

* **source face**: landmarks + crop + 3DMM of the picture, once per clip (given in seconds, and as
  its share of a 10-s clip);
* **audio to coefficients**: ExpNet + PoseVAE over 3 s of real speech;
* **render**: the face renderer (keypoints, mapping, dense motion, SPADE decoder), per precision;
* **paste-back** (full mode onto a 1920x1080 picture): ``cv2.seamlessClone`` per frame and the
  batched torch Poisson blend (:mod:`sadtalker_models.face.seamless_clone`);
* **enhance**: per frame, the landmarks that place the face (dlib, timed on the real face of the same
  frame size, as stand-in renders are no faces; detected on every frame, and followed with
  :class:`~sadtalker_models.face.tracking.FaceTracker` as the enhancer does), then alignment + GFPGANv1.4 (a random-weight
  stand-in of the official architecture) + paste with those landmarks, and the alignment and paste
  alone (the CPU part of the enhancer, with a restorer that changes nothing);
* **encode**: H.264 (ffmpeg) of the output frames.

Video runs at 25 fps, so "s per s of video" = seconds per frame x 25; 1.0 would be real time.

    .venv/bin/python -m benchmarks.bench_stages --device cpu --sizes 256 512 --frames 4

Every figure names its device (the CPU model and its ISA, or the GPU) and the date; the machine
is shared in this project, so ``--repeats`` keeps the best of several runs.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sadtalker_models import pipeline
from sadtalker_models.frames import pad_to_even
from sadtalker_models.precision import cpu_runs_natively
from sadtalker_models.video import Mp4Writer, load_audio, read_image
from benchmarks.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "data" / "media"
FPS = 25
STAGES = ("face", "coefficients", "render", "paste", "enhance", "encode")
FULL_PICTURE = (1920, 1080)   # width, height of the picture full mode pastes onto


def device_name(device: torch.device) -> str:
    """The CPU model and the ISA torch uses, or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``run()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def full_picture() -> np.ndarray:
    """A 1920x1080 picture with a half-body portrait in its middle (``full3.png`` scaled to 1080 high)."""
    import cv2

    person = read_image(MEDIA / "full3.png")
    h, w = person.shape[:2]
    height = FULL_PICTURE[1]
    width = round(w * height / h)
    person = cv2.resize(person, (width, height), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, FULL_PICTURE[0], 3), 96, np.uint8)
    left = (FULL_PICTURE[0] - width) // 2
    canvas[:, left:left + width] = person
    return canvas


def gfpgan_stand_in(folder: Path) -> Path:
    """A random-weight GFPGANv1.4 in the official file layout (spandrel's architecture, v1.4 settings)."""
    from spandrel.architectures.GFPGAN import GFPGAN

    path = folder / "GFPGANv1.4.pth"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                            fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                            sft_half=True)
        torch.save({"params_ema": module.state_dict()}, path)
    return path


class Unchanged:
    """A restorer that returns its faces as they are: times the enhancer's alignment and paste alone."""

    architecture = "unchanged"

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        return faces


def precisions_for(device: torch.device, asked: list[str]) -> list[str]:
    """fp32 always; fp16/bf16 only where they run natively (on a CPU without, they would fall back)."""
    out = []
    for name in asked:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
        if device.type == "cpu" and not cpu_runs_natively(dtype):
            print(f"# {name}: not native on this CPU ({torch.backends.cpu.get_cpu_capability()}); not measured")
            continue
        out.append(name)
    return out


def measure(args: argparse.Namespace) -> list[tuple[str, str, float, str]]:
    """Rows of (stage, configuration, seconds per second of video, note)."""
    from sadtalker_models.enhance import enhance_frames, load_face_restorer
    from sadtalker_models.face.landmarks import make_landmark_detector
    from sadtalker_models.face.paste import FramePaster
    from sadtalker_models.face.tracking import FaceTracker
    from sadtalker_models.stand_in_weights import write_stand_in_files

    device = pipeline.resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="sadtalker_stages_"))
    weights = write_stand_in_files(work / "weights", 0, sizes=tuple(args.sizes))
    wave, rate = load_audio(MEDIA / "speech_en_16k_3s.wav")
    pictures = {"crop": read_image(MEDIA / "art_0.png"), "full": full_picture()}
    detector = make_landmark_detector("dlib")
    restorer = load_face_restorer(gfpgan_stand_in(work), device=device) if not args.no_enhance else None
    precisions = precisions_for(device, args.precisions)
    rows: list[tuple[str, str, float, str]] = []
    per_video = FPS / args.frames   # seconds per frame x 25

    for size in args.sizes:
        checkpoint = weights / f"SadTalker_V0.0.2_{size}.safetensors"
        models = {p: pipeline.load_models(checkpoint, device=device, precision=p, cache=None) for p in precisions}
        base = models["fp32"]
        for mode in ("crop", "full"):
            tag = f"{size} {mode}" + (" 1080p" if mode == "full" else "")
            picture = pictures[mode]
            face = pipeline.prepare_face(base, picture, mode, size, "dlib")
            coeffs = pipeline.audio_to_coefficients(base, face, wave, rate)
            if "face" in args.stages:
                face_seconds = best_time(lambda: pipeline.prepare_face(base, picture, mode, size, "dlib"), device,
                                         args.repeats)
                rows.append(("source face (once a clip)", tag, face_seconds / 10.0, f"{face_seconds:.2f} s a clip"))
            if "coefficients" in args.stages:
                coeff_seconds = best_time(lambda: pipeline.audio_to_coefficients(base, face, wave, rate), device,
                                          args.repeats)
                rows.append(("audio to coefficients", tag, coeff_seconds / coeffs.duration, "fp32"))
            short = pipeline.Coefficients(coeffs=coeffs.coeffs[:args.frames], still=coeffs.still,
                                          source_pose=coeffs.source_pose)
            crops = None
            for precision in precisions:
                def render(models=models[precision]):
                    return np.concatenate(list(pipeline.render_frames(models, face, short, batch_size=args.batch_size,
                                                                      paste_back=False)))
                if "render" in args.stages:
                    rows.append(("render", tag, best_time(render, device, args.repeats) * per_video,
                                 f"{precision}, batch {args.batch_size}"))
                crops = render() if crops is None else crops
            frames = crops
            if mode == "full" and "paste" in args.stages:
                for backend in ("cv2", "torch"):
                    paster = FramePaster(face.original, face.crop_info, device, backend=backend)
                    seconds = best_time(lambda: paster(crops), device, args.repeats)
                    rows.append(("paste-back", tag, seconds * per_video, backend))
            if mode == "full":
                frames = FramePaster(face.original, face.crop_info, device)(crops)
            if restorer is not None and "enhance" in args.stages:
                # stand-in renders are no faces, so time the two halves on the real face of the same frame
                # geometry (the crop, or the 1080p picture): the per-frame landmarks, then align + GFPGAN
                # + paste with those landmarks for every frame (a face is always found)
                real = face.crop if mode == "crop" else face.original
                points = detector.detect(real)
                seconds = best_time(lambda: detector.detect(real), device, args.repeats)
                rows.append(("enhance: landmarks", tag, seconds * FPS, f"{real.shape[1]}x{real.shape[0]}"))

                def follow():   # one second of video: a detection, then the shape predictor in the last box
                    tracker = FaceTracker(detector)
                    for _ in range(FPS):
                        tracker.detect(real)
                rows.append(("enhance: landmarks, followed", tag, best_time(follow, device, args.repeats),
                             "FaceTracker"))
                seconds = best_time(lambda: enhance_frames(frames, restorer, landmarks=[points] * len(frames),
                                                           upscale=1), device, args.repeats)
                rows.append(("enhance: align + GFPGAN + paste", tag, seconds * per_video,
                             f"{frames.shape[2]}x{frames.shape[1]}"))
                seconds = best_time(lambda: enhance_frames(frames, Unchanged(), landmarks=[points] * len(frames),
                                                           upscale=1), device, args.repeats)
                rows.append(("enhance: align + paste", tag, seconds * per_video, "CPU, without the network"))

            def encode():
                with Mp4Writer(work / "out.mp4") as writer:
                    for _ in range(max(1, 10 // len(frames))):
                        writer.write(pad_to_even(frames))
                return writer
            repeats = max(1, 10 // len(frames)) * len(frames)
            if "encode" in args.stages:
                rows.append(("encode (H.264)", tag, best_time(encode, device, args.repeats) * FPS / repeats,
                             f"{frames.shape[2]}x{frames.shape[1]}"))
    return rows


def print_table(rows: list[tuple[str, str, float, str]], device: torch.device) -> None:
    configs = list(dict.fromkeys(config for _, config, _, _ in rows))
    stages = list(dict.fromkeys((stage, note.split(",")[0] if stage == "render" or stage == "paste-back" else "")
                                for stage, _, _, note in rows))
    print(f"\nStage budget on {device_name(device)}, {datetime.date.today()}: seconds of compute per second of "
          "video (25 frames); source face: its time spread over a 10-s clip")
    print("| stage | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for stage, variant in stages:
        cells = []
        for config in configs:
            found = [(value, note) for s, c, value, note in rows
                     if s == stage and c == config and (not variant or note.split(",")[0] == variant)]
            cells.append(f"{found[0][0]:.2f}" if found else "–")
        print(f"| {stage}{f' ({variant})' if variant else ''} | " + " | ".join(cells) + " |")
    print("\nnotes: " + "; ".join(f"{s} {c}: {n}" for s, c, _, n in rows if "a clip" in n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=(256, 512))
    parser.add_argument("--frames", type=int, default=4, help="frames rendered per measurement")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                        help="the stages to time (the frames the later ones need are rendered anyway)")
    parser.add_argument("--no-enhance", action="store_true", help="skip the GFPGAN stage")
    args = parser.parse_args(argv)
    device = pipeline.resolve_device(args.device)
    with torch.inference_mode():
        rows = measure(args)
    print_table(rows, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
