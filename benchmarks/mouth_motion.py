"""Whose mouth moves when: per-frame mouth-region change of each face against each voice's loudness.

A measurement for pictures with several talking faces (the two-people workflow): the mouths are
found once on the still picture (dlib landmarks 48-67 of every face, numbered left to right as
the Face Crop node numbers them), then for every frame of the rendered video the mean absolute
pixel change of each mouth box from the previous frame is set against the loudness (RMS) of
each voice in that frame's 1/25 s. Face i should follow voice i and not the others.

    .venv/bin/python -m benchmarks.mouth_motion --video two.mp4 --picture two_people.png \\
        --audio voice_a.wav voice_b.wav

prints two tables, face by voice: the mean mouth change while that voice speaks alone, and the
correlation; and how much of each voice the video's sound track holds. Exits 1 unless each mouth
moves at least 3x more in its own turn than in another's and correlates more with its own voice
than with any other, and every voice is in the sound track (0.5 to 2 times its own loudness).
Run it with the head still (head_motion_scale 0, no blinks) so that the change in a mouth box is
lip motion; the pytest version is ``tests/test_two_faces.py``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, Sequence

import numpy as np

FPS = 25
MOUTH = slice(48, 68)   # iBUG 68-point layout: outer and inner lip


def mouth_boxes(picture: np.ndarray, landmark_backend: str = "dlib", margin: float = 0.35
                ) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` around each face's lips in ``picture`` (H, W, 3) uint8, left to right,
    widened by ``margin`` of the lip width on every side and clipped to the picture."""
    from sadtalker_models.face.landmarks import make_landmark_detector
    from sadtalker_models.face.select import detect_all_faces

    height, width = picture.shape[:2]
    boxes = []
    for face in detect_all_faces(make_landmark_detector(landmark_backend), picture):
        lips = face[MOUTH]
        (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
        pad = margin * (x1 - x0)
        boxes.append((max(0, int(x0 - pad)), max(0, int(y0 - pad)),
                      min(width, int(np.ceil(x1 + pad))), min(height, int(np.ceil(y1 + pad)))))
    return boxes


def region_motion(frames: Iterable[np.ndarray], boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """``(len(boxes), T)`` mean absolute change (0..255) of each box from the previous frame; frame 0
    is 0. ``frames``: RGB uint8 ``(H, W, 3)``, read one at a time."""
    rows: list[list[float]] = []
    previous = None
    for frame in frames:
        crops = [frame[y0:y1, x0:x1].astype(np.float32) for x0, y0, x1, y1 in boxes]
        rows.append([0.0] * len(boxes) if previous is None else
                    [float(np.abs(c - p).mean()) for c, p in zip(crops, previous)])
        previous = crops
    return np.asarray(rows, dtype=np.float64).T.reshape(len(boxes), -1)


def loudness(wave: np.ndarray, rate: int, num_frames: int) -> np.ndarray:
    """RMS of a mono or ``(C, n)`` waveform in each video frame's 1/25 s, ``(num_frames,)``
    (zero past its end)."""
    mono = np.asarray(wave, dtype=np.float64).reshape(-1, np.shape(wave)[-1]).mean(axis=0)
    per = rate / FPS
    out = np.zeros(num_frames)
    for t in range(num_frames):
        part = mono[int(round(t * per)):int(round((t + 1) * per))]
        out[t] = np.sqrt(np.mean(part ** 2)) if part.size else 0.0
    return out


def correlations(motion: np.ndarray, voices: np.ndarray) -> np.ndarray:
    """``[face, voice]`` Pearson correlation of each face's motion ``(F, T)`` with each voice's
    loudness ``(V, T)``; NaN where one side is constant."""
    out = np.full((len(motion), len(voices)), np.nan)
    for i, m in enumerate(motion):
        for j, v in enumerate(voices):
            if np.ptp(m) > 0 and np.ptp(v) > 0:
                out[i, j] = float(np.corrcoef(m, v)[0, 1])
    return out


def speaks_alone(voices: np.ndarray, j: int, loud: float = 0.02, quiet: float = 0.005) -> np.ndarray:
    """``(T,)`` bool: the frames where voice ``j``'s loudness is above ``loud`` and every other
    voice's below ``quiet`` (``voices``: ``(V, T)`` loudness)."""
    return (voices[j] > loud) & (np.delete(voices, j, axis=0) < quiet).all(axis=0)


def solo_motion(motion: np.ndarray, voices: np.ndarray, loud: float = 0.02, quiet: float = 0.005) -> np.ndarray:
    """``[face, voice]`` mean change of each face's mouth ``(F, T)`` over the frames where voice j
    speaks alone (its loudness above ``loud``, every other voice's below ``quiet``); NaN when voice j
    never speaks alone. Unlike the correlation, this is not blurred by the renderer's 27-frame
    window as long as the turns are longer than that window's reach."""
    out = np.full((len(motion), len(voices)), np.nan)
    for j in range(len(voices)):
        alone = speaks_alone(voices, j, loud, quiet)
        alone[0] = False                          # frame 0 has no previous frame to change from
        if alone.any():
            out[:, j] = motion[:, alone].mean(axis=1)
    return out


def moves_in_own_turn(solo: np.ndarray, factor: float = 3.0) -> bool:
    """True when every face's mouth changes at least ``factor`` times more while its own voice speaks
    alone than while another voice does."""
    return all(np.isfinite(row).all() and all(row[i] > factor * row[j] for j in range(len(row)) if j != i)
               for i, row in enumerate(solo))


def voices_in_track(track: np.ndarray, voices: np.ndarray, loud: float = 0.02, quiet: float = 0.005) -> np.ndarray:
    """For each voice, the soundtrack's loudness ``track`` ``(T,)`` over the frames where that voice
    speaks alone, divided by the voice's own loudness there: about 1 when the voice is in the mix
    (Audio Merge "add"), about 0 when it is missing; NaN when it never speaks alone."""
    out = np.full(len(voices), np.nan)
    for j, voice in enumerate(voices):
        alone = speaks_alone(voices, j, loud, quiet)
        if alone.any():
            out[j] = float(track[alone].mean() / voice[alone].mean())
    return out


def follows_own_voice(table: np.ndarray) -> bool:
    """True when every face correlates more with its own voice (same index) than with any other."""
    return all(np.isfinite(row[i]) and all(row[i] > row[j] for j in range(len(row)) if j != i)
               for i, row in enumerate(table))


def format_table(table: np.ndarray) -> str:
    head = "face \\ voice " + " ".join(f"{j:>7d}" for j in range(table.shape[1]))
    return "\n".join([head] + [f"{i:>12d} " + " ".join(f"{c:7.2f}" for c in row) for i, row in enumerate(table)])


def main(argv: list[str] | None = None) -> int:
    from sadtalker_models.video import load_audio, read_image, read_video

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="the rendered video (all faces in one picture)")
    parser.add_argument("--picture", required=True, help="the still picture the faces were found in")
    parser.add_argument("--audio", nargs="+", required=True, help="one voice per face, left to right")
    parser.add_argument("--landmark-backend", default="dlib")
    args = parser.parse_args(argv)
    boxes = mouth_boxes(read_image(args.picture), args.landmark_backend)
    if len(boxes) != len(args.audio):
        print(f"{len(boxes)} face(s) found in {args.picture}, {len(args.audio)} voice(s) given", file=sys.stderr)
        return 2
    frames, _fps = read_video(args.video)
    motion = region_motion(frames, boxes)
    voices = np.stack([loudness(*load_audio(path), motion.shape[1]) for path in args.audio])
    table = correlations(motion, voices)
    solo = solo_motion(motion, voices)
    print(f"mouth boxes (x0, y0, x1, y1): {boxes}; {motion.shape[1]} frames")
    print("mean change of each mouth box (0..255 per pixel) while one voice speaks alone:")
    print(format_table(solo))
    print("correlation of each mouth's per-frame change with each voice's loudness:")
    print(format_table(table))
    track = loudness(*load_audio(args.video), motion.shape[1])
    presence = voices_in_track(track, voices)
    print("the video's sound over each voice's own turn, relative to that voice (1 = all of it):",
          " ".join(f"{p:.2f}" for p in presence))
    ok = moves_in_own_turn(solo) and follows_own_voice(table)
    print("each mouth moves in its own turn and follows its own voice" if ok else
          "a mouth moves in another's turn, or follows another voice more than its own")
    heard = bool(np.all((presence > 0.5) & (presence < 2.0)))
    print("every voice is in the sound track" if heard else "a voice is missing from the sound track")
    return 0 if ok and heard else 1


if __name__ == "__main__":
    sys.exit(main())
