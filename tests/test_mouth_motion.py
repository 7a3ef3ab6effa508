"""benchmarks/mouth_motion.py, the measurement of whose mouth moves when, on known values."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import mouth_motion
from test_feature_nodes import two_faces


def test_mouth_boxes_cover_each_face_lips_left_to_right():
    picture = (two_faces()[0] * 255).round().byte().numpy()
    boxes = mouth_motion.mouth_boxes(picture)
    assert len(boxes) == 2
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
    assert ax1 < 512 <= bx0                                   # art_0's middle on the left, full3 on the right
    for x0, y0, x1, y1 in boxes:
        assert 20 < x1 - x0 < 320 and 10 < y1 - y0 < 200      # a mouth (lips + 35 % margin), not a face


def test_region_motion_is_the_mean_change_of_each_box():
    frames = np.zeros((4, 10, 20, 3), np.uint8)
    frames[1, :, :10] = 10          # left box changes 0 -> 10 at frame 1
    frames[2, :, :10] = 10
    frames[3, :, 10:] = 40          # right box changes at frame 3, left goes back to 0
    motion = mouth_motion.region_motion(iter(frames), [(0, 0, 10, 10), (10, 0, 20, 10)])
    assert motion.tolist() == [[0, 10, 0, 10], [0, 0, 0, 40]]


def test_loudness_is_the_rms_of_each_frame():
    rate = 16000
    t = np.arange(rate // 5) / rate                          # 0.2 s = 5 frames
    wave = 0.5 * np.sin(2 * np.pi * 400 * t)                 # 16 periods a frame: RMS 0.5 / sqrt 2
    wave[640 * 3: 640 * 4] = 0
    out = mouth_motion.loudness(np.stack([wave, wave]), rate, 6)
    assert out[:3] == pytest.approx([0.5 / np.sqrt(2)] * 3, rel=1e-3)
    assert out[3] == 0 and out[5] == 0                        # silence, and past the end


def test_correlation_table_and_the_verdict():
    voice_a = np.array([1, 1, 1, 0, 0, 0], float)
    voice_b = voice_a[::-1]
    motion = np.stack([voice_a * 3 + 0.1, voice_b * 2])
    table = mouth_motion.correlations(motion, np.stack([voice_a, voice_b]))
    assert table == pytest.approx(np.array([[1, -1], [-1, 1]]))
    assert mouth_motion.follows_own_voice(table)
    assert not mouth_motion.follows_own_voice(table[::-1])   # faces swapped: each follows the other voice
    flat = mouth_motion.correlations(np.zeros((2, 6)), np.stack([voice_a, voice_b]))
    assert np.isnan(flat).all() and not mouth_motion.follows_own_voice(flat)
    assert "face \\ voice" in mouth_motion.format_table(table)


def test_solo_motion_averages_each_mouth_over_the_frames_one_voice_speaks_alone():
    voices = np.array([[0.0, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0],      # A speaks frames 0-3 (frame 0 is skipped)
                       [0.0, 0.0, 0.0, 0.1, 0.2, 0.2, 0.0]])     # B 3-5; frame 3 is both at once
    motion = np.array([[0.0, 2.0, 4.0, 9.0, 0.1, 0.3, 0.0],
                       [0.0, 0.2, 0.4, 9.0, 1.0, 3.0, 0.0]])
    solo = mouth_motion.solo_motion(motion, voices)
    assert solo == pytest.approx(np.array([[3.0, 0.2], [0.3, 2.0]]))
    assert mouth_motion.moves_in_own_turn(solo)                     # 3.0 > 3 x 0.2, 2.0 > 3 x 0.3
    assert not mouth_motion.moves_in_own_turn(solo, factor=10.0)
    assert np.isnan(mouth_motion.solo_motion(motion, np.zeros((2, 7)))).all()   # nobody speaks alone


def test_voices_in_track_finds_each_voice_in_the_mix():
    voices = np.array([[0.0, 0.3, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.2, 0.2]])
    mixed = voices.sum(axis=0)
    assert mouth_motion.voices_in_track(mixed, voices) == pytest.approx([1.0, 1.0])
    assert mouth_motion.voices_in_track(voices[0], voices) == pytest.approx([1.0, 0.0])   # B left out of the mix
