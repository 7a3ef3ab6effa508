"""One talking-head video from the run options: the options themselves (shared by the CLI's ``run`` and
``batch`` commands), their checks before any work, and the work (:func:`run_video`).

``args`` is an :class:`argparse.Namespace` of the options :func:`add_run_args` defines, whether they
came from the command line or from a manifest row.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

from .options import FPS, LANDMARK_BACKENDS, MAX_IDLE_SECONDS, MAX_POSE_STYLE, PRECISIONS, PREPROCESS_MODES

logger = logging.getLogger("sadtalker_models")

DEFAULT_MODELS_DIR = os.environ.get("SADTALKER_MODELS_DIR", os.path.join("models", "sadtalker"))


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", "-i", required=True, help="source picture (png/jpg/...; a video's first frame)")
    speech = p.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", "-a", help="speech: any audio or video file ffmpeg reads")
    speech.add_argument("--idle", type=float, metavar="SECONDS",
                        help="no speech: this many seconds of idle motion (blinks, slight head motion, closed mouth)")
    speech.add_argument("--coefficients", metavar="FILE",
                        help="render a coefficient file saved with --save-coefficients (or ComfyUI's Save "
                             "Coefficients) instead of speech; its audio, if any, becomes the sound track")
    p.add_argument("--save-coefficients", metavar="FILE",
                   help="also save the motion coefficients (and the speech) to this .safetensors file")
    p.add_argument("--out", "-o", default="sadtalker.mp4", help="output mp4 (default: %(default)s)")
    p.add_argument("--models-dir", default=DEFAULT_MODELS_DIR,
                   help="folder with SadTalker_V0.0.2_<size>.safetensors and the mapping files "
                        "(default: $SADTALKER_MODELS_DIR or %(default)s)")
    p.add_argument("--checkpoint", help="explicit SadTalker .safetensors file (overrides --models-dir/--size)")
    p.add_argument("--preprocess", "--mode", default="crop", choices=PREPROCESS_MODES,
                   help="crop (face only), extcrop, resize, full / extfull (paste back into the picture)")
    p.add_argument("--size", type=int, default=None, choices=(256, 512),
                   help="render size and checkpoint (default 256, or the size of --checkpoint)")
    p.add_argument("--still", action="store_true", help="keep the source head pose")
    p.add_argument("--pose-style", type=int, default=0, help="head-motion style 0..45")
    p.add_argument("--seed", type=int, default=0, help="seed for head motion and blinks (default 0)")
    p.add_argument("--no-blink", action="store_true", help="no random eye blinks")
    p.add_argument("--blink-rate", type=float, default=0.0, metavar="PER_MINUTE",
                   help="about this many blinks a minute (default 0: the original's natural random blinks)")
    p.add_argument("--head-motion-scale", type=float, default=1.0,
                   help="head motion around the source pose: 0 still, 1 as predicted (default), >1 livelier")
    p.add_argument("--face-index", type=int, default=-1,
                   help="which face talks: -1 the largest (default), 0, 1, ... from left to right")
    p.add_argument("--face-mask", help="mask image (white over the face that should talk); overrides --face-index")
    p.add_argument("--expression-scale", type=float, default=1.0)
    p.add_argument("--expression-image", metavar="PICTURE",
                   help="talk with the expression of this picture's face (smiling, sad, ...); the source keeps its "
                        "identity (needs the official weights to show)")
    p.add_argument("--expression-strength", type=float, default=1.0,
                   help="how much of --expression-image: 0 the source's own expression, 1 the picture's (default)")
    p.add_argument("--ref-video", help="reference video for both head pose and blinks")
    p.add_argument("--ref-pose", help="reference video for head pose only")
    p.add_argument("--ref-eyeblink", help="reference video for eye blinks only")
    p.add_argument("--yaw", help="yaw path in degrees, e.g. 0,20,-10")
    p.add_argument("--pitch", help="pitch path in degrees")
    p.add_argument("--roll", help="roll path in degrees")
    p.add_argument("--batch-size", type=int, default=2, help="frames rendered at once (default 2)")
    p.add_argument("--no-paste-back", action="store_true", help="full/extfull: keep the face crop only")
    p.add_argument("--enhancer", help="face restorer file (e.g. GFPGANv1.4.pth) to enhance every frame")
    p.add_argument("--enhancer-upscale", type=int, default=2, choices=(1, 2),
                   help="output scale with --enhancer (2 like the original SadTalker)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="renderer precision (auto: fp16 on CUDA, bf16 on a CPU with AMX, "
                   "else fp32; fp16/bf16 on a CPU without native support fall back to fp32 with a warning)")
    p.add_argument("--landmark-backend", default="auto", choices=LANDMARK_BACKENDS)
    p.add_argument("--landmark-dir", help="folder with face-alignment weights (for --landmark-backend face_alignment)")


def run(args: argparse.Namespace, check_stop=lambda: None) -> int:
    """Check the arguments and every output, hold the outputs' locks, then render (:func:`run_video`).

    ``check_stop()`` runs between render batches and before the mux; it may raise to stop.
    """
    run_video(args, check_stop)
    return 0


def run_video(args: argparse.Namespace, check_stop=lambda: None, faces=None):
    """:func:`run`'s work, returning the :class:`~sadtalker_models.render_video.VideoResult`.

    ``faces``: something called like :func:`pipeline.prepare_face` in its place (the batch command's
    :class:`~sadtalker_models.batch.FaceCache`, which prepares each picture once).
    """
    from contextlib import ExitStack

    from .video import check_writable, output_folder, output_lock

    outputs = check_run_args(args)
    with ExitStack() as stack:
        for out in outputs:
            stack.enter_context(output_folder(out))   # a failed run removes the output folders it created
            check_writable(out)
            stack.enter_context(output_lock(out))
        return _render(args, check_stop, faces)


#: The run command's input files, by argument name.
INPUT_FLAGS = ("image", "audio", "coefficients", "face_mask", "checkpoint", "ref_video", "ref_pose", "ref_eyeblink",
               "enhancer", "expression_image")
#: Numeric run arguments that must be finite numbers (argparse's float() takes "inf" and "nan").
FINITE_FLAGS = ("idle", "expression_scale", "head_motion_scale", "blink_rate", "expression_strength")


def check_run_args(args: argparse.Namespace) -> list[Path]:
    """Every check that needs no decoding or model: numbers in range, input files present, each
    output of the right kind and none the same file as an input or another output.

    Returns the output paths: the video, then the coefficient file when ``--save-coefficients`` is given.
    """
    from . import pipeline
    from .video import check_distinct_outputs

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"The output must be an .mp4 file, got {out}.")
    outputs = {"--out": out}
    if args.save_coefficients:
        saved = Path(args.save_coefficients)
        if saved.suffix.lower() != ".safetensors":
            raise ValueError(f"--save-coefficients must name a .safetensors file, got {saved}.")
        outputs["--save-coefficients"] = saved
    for name in FINITE_FLAGS:
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}.")
    if args.idle is not None and not 1.0 / FPS <= args.idle <= MAX_IDLE_SECONDS:
        raise ValueError(f"--idle needs a length between 0.04 seconds (one frame) and {MAX_IDLE_SECONDS:.0f} seconds; "
                         f"got {args.idle}.")
    if not 0 <= args.pose_style <= MAX_POSE_STYLE:
        raise ValueError(f"--pose-style must be between 0 and {MAX_POSE_STYLE}, got {args.pose_style}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.blink_rate < 0:
        raise ValueError(f"--blink-rate must be 0 (natural blinks) or more blinks a minute, got {args.blink_rate}.")
    for name in ("yaw", "pitch", "roll"):
        pipeline.parse_angles(getattr(args, name), name)
    if args.coefficients and (args.ref_video or args.ref_pose or args.ref_eyeblink):
        raise ValueError("--coefficients already hold the motion; leave out --ref-video/--ref-pose/--ref-eyeblink.")
    if args.coefficients and args.expression_image:
        raise ValueError("--coefficients already hold the expression; leave out --expression-image.")
    for flag in INPUT_FLAGS:
        path = getattr(args, flag, None)
        if path and not Path(path).is_file():
            what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
            raise ValueError(f"--{flag.replace('_', '-')} {path} {what}; check the path.")
    check_distinct_outputs(outputs, {f"--{flag.replace('_', '-')}": getattr(args, flag, None) for flag in INPUT_FLAGS})
    return list(outputs.values())


def check_speech(wave, rate: int, path: str) -> None:
    """The checks the coefficient stage makes on the speech (finite samples, at least one 40-ms frame), now."""
    from .audio import SAMPLE_RATE, num_video_frames, to_mono_16k

    try:
        samples = to_mono_16k(wave, rate).shape[0]
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if num_video_frames(samples) < 1:
        raise ValueError(f"The audio of {path} is too short ({samples / SAMPLE_RATE * 1000:.1f} ms); at least 40 ms "
                         "(one 25-fps video frame) of speech is needed.")


def check_model_files(args: argparse.Namespace, checkpoint: Path):
    """Before the big checkpoint is read: the device, the mapping file, the reference videos and the
    enhancer (loaded here, and returned, or None)."""
    from . import pipeline
    from .checkpoints import load_mapping, mapping_file_for
    from .video import probe

    device = pipeline.resolve_device(args.device)
    load_mapping(Path(checkpoint.parent if args.checkpoint else args.models_dir) / mapping_file_for(args.preprocess))
    for flag in ("ref_video", "ref_pose", "ref_eyeblink"):
        path = getattr(args, flag)
        if path and not probe(path).video:
            raise ValueError(f"--{flag.replace('_', '-')} {path} has no video stream; give a video of a face.")
    if not args.enhancer:
        return None
    from .enhance import load_face_restorer

    return load_face_restorer(args.enhancer, device=device)


def _render(args: argparse.Namespace, check_stop, faces=None):
    import numpy as np
    from tqdm import tqdm

    from . import pipeline
    from .coefficient_files import load_coefficients, save_coefficients
    from .face.landmarks import to_rgb_uint8
    from .render_video import render_to_mp4
    from .video import load_audio, read_image, read_video

    out = Path(args.out)  # checked by check_run_args
    image = to_rgb_uint8(read_image(args.image), f"picture {args.image}")   # a too-small picture fails here
    mask = read_image(args.face_mask)[..., 0] > 127 if args.face_mask else None
    saved = load_coefficients(args.coefficients) if args.coefficients else None
    if saved is not None:
        wave, rate = None, None   # the file's own audio (or silence) goes with it
    elif args.audio:
        wave, rate = load_audio(args.audio)
        check_speech(wave, rate, args.audio)
    else:   # --idle, in range (check_run_args)
        rate = 16000
        wave = np.zeros((1, int(round(args.idle * 25)) * rate // 25), dtype=np.float32)
    checkpoint = Path(args.checkpoint) if args.checkpoint else pipeline.find_checkpoint(args.models_dir, args.size or 256)
    restorer = check_model_files(args, checkpoint)

    models = pipeline.load_models(checkpoint, device=args.device, precision=args.precision,
                                  mapping_dir=args.models_dir if not args.checkpoint else None)
    logger.info("Models: %s", models)
    prepare_face = faces if faces is not None else pipeline.prepare_face
    face = prepare_face(models, image, args.preprocess, args.size, args.landmark_backend, args.landmark_dir,
                                 face_index=args.face_index, mask=mask)
    expression = None
    if args.expression_image:   # the largest face of that picture, prepared like the source
        try:
            expression = prepare_face(models, read_image(args.expression_image), args.preprocess, args.size,
                                               args.landmark_backend, args.landmark_dir).coeff_3dmm
        except ValueError as err:
            raise ValueError(f"--expression-image {args.expression_image}: {err}") from err

    refs: dict[str, object] = {}
    ref_paths = {"pose": args.ref_pose or args.ref_video, "eyeblink": args.ref_eyeblink or args.ref_video}
    extracted: dict[str, object] = {}
    num_frames_needed = (int(wave.shape[1] * 25 // rate) or None) if wave is not None else None
    for kind, path in ref_paths.items():
        if not path:
            continue
        if path not in extracted:
            frames, fps = read_video(path, max_frames=num_frames_needed)
            if abs(fps - 25.0) > 0.01:
                logger.warning("Reference video %s runs at %.2f fps; its frames are used as 25-fps frames.", path, fps)
            extracted[path] = pipeline.reference_coefficients(models, frames, args.landmark_backend,
                                                              args.landmark_dir, preprocess=args.preprocess)
        refs[kind] = extracted[path]

    motion = dict(pose_style=args.pose_style, seed=args.seed, blink=not args.no_blink, still=args.still,
                  head_motion_scale=args.head_motion_scale, blinks_per_minute=args.blink_rate,
                  expression_reference=expression, expression_strength=args.expression_strength)
    if saved is not None:
        coeffs = saved
    elif args.audio:
        coeffs = pipeline.audio_to_coefficients(models, face, wave, rate, ref_pose=refs.get("pose"),
                                                ref_eyeblink=refs.get("eyeblink"), **motion)
    else:
        coeffs = pipeline.idle_coefficients(models, face, args.idle, **motion)
    if args.save_coefficients:
        save_coefficients(coeffs, args.save_coefficients)
        logger.info("Saved the coefficients to %s", args.save_coefficients)
    total = coeffs.num_frames
    logger.info("%d frames (%.2f s) at 25 fps", total, coeffs.duration)

    detector = None
    if restorer is not None:
        from .face.landmarks import make_landmark_detector

        detector = make_landmark_detector(args.landmark_backend, args.landmark_dir)

    bar = tqdm(total=total, unit="frame", desc="render", disable=args.quiet)

    def progress(done: int, of: int) -> None:
        check_stop()
        bar.update(done - bar.n)

    try:
        video = render_to_mp4(models, face, coeffs, out, expression_scale=args.expression_scale,
                      batch_size=args.batch_size, yaw=args.yaw, pitch=args.pitch, roll=args.roll,
                      paste_back=not args.no_paste_back, progress=progress, check=check_stop,
                      audio=None if wave is None else (wave, rate), restorer=restorer, detector=detector,
                      enhance_upscale=args.enhancer_upscale, threaded=models.device.type == "cuda")
    finally:
        bar.close()
    logger.info("Wrote %s (%d frames, %.2f s, with audio)", out, total, coeffs.duration)
    return video
