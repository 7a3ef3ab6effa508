"""Stage 1: speech waveform -> per-frame mel windows (spec §5).

Pipeline: mono float32 at 16 kHz (:func:`to_mono_16k`) -> cut to ``640*T`` samples with
``T = floor(len/640)`` (25 fps) -> pre-emphasis, zero-padded centred STFT, Slaney mel basis,
dB and symmetric normalisation in float64 (:func:`mel_spectrogram`) -> one ``(80, 16)`` window per
video frame (:func:`mel_windows`).

Resampling uses ``soxr.resample(..., quality="HQ")``, which is what librosa >= 0.10 does by
default (``res_type="soxr_hq"``) and what the parity fixtures were made with. The reference's
pinned librosa 0.9.2 used resampy ``kaiser_best`` instead; only non-16 kHz input is affected.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from scipy.signal import lfilter

from .options import FPS

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
WINDOW_STEPS = 16


# ----------------------------------------------------------------------------- loading

def _as_numpy(waveform: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        return waveform.detach().to("cpu").numpy()
    if isinstance(waveform, np.ndarray):
        return waveform
    raise ValueError(
        f"Audio must be a torch tensor or a numpy array, got {type(waveform).__name__}; "
        "pass the waveform samples shaped (n,), (C, n) or (1, C, n)."
    )


def pcm_to_float32(x: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled to [-1, 1) the way sound-file readers do; floats are cast."""
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"Audio samples must be real numbers, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.unsignedinteger):
        half = float(2 ** (8 * x.dtype.itemsize - 1))
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        full = float(2 ** (8 * x.dtype.itemsize - 1))
        return (x.astype(np.float64) / full).astype(np.float32)
    return x.astype(np.float32, copy=False)


#: A float waveform peaking above this is not -1..1 audio (the mel would saturate): it is scaled down.
LOUD_PEAK = 4.0


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Length after resampling to 16 kHz: ``ceil(n * (16000 / sr))`` in float64, as librosa computes it."""
    return int(math.ceil(num_samples * (float(SAMPLE_RATE) / sample_rate)))


def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix to mono float32 and resample to 16 kHz.

    Args:
        waveform: samples shaped ``(n,)``, ``(C, n)`` or ``(1, C, n)``; float (any
            range, normally [-1, 1]) or integer PCM (scaled to [-1, 1)). Torch or numpy.
        sample_rate: samples per second of ``waveform`` (> 0).

    Returns:
        ``(m,)`` float32 at 16 kHz with ``m = ceil(n * 16000 / sr)``; channels are averaged in
        float32 first, then resampled with soxr HQ (librosa >= 0.10's default ``soxr_hq``) and
        trimmed/zero-padded to ``m``. 16 kHz input is returned unresampled.

    Raises:
        ValueError: bad sample rate, wrong shape, empty audio, or NaN/inf samples.
    """
    x = _as_numpy(waveform)
    try:
        sr_f = float(sample_rate)
    except (TypeError, ValueError):
        raise ValueError(f"The sample rate must be a positive number, got {sample_rate!r}.") from None
    if not math.isfinite(sr_f) or sr_f <= 0:
        raise ValueError(f"The sample rate must be a positive number of samples per second, got {sample_rate!r}.")
    if sr_f != int(sr_f):
        raise ValueError(f"The sample rate must be a whole number of samples per second, got {sample_rate!r}.")
    sr = int(sr_f)

    if x.ndim == 3:
        if x.shape[0] != 1:
            raise ValueError(
                f"Audio batch of {x.shape[0]} clips given (shape {tuple(x.shape)}); pass one clip "
                "(batch size 1, shape (1, channels, samples))."
            )
        x = x[0]
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(
            f"Audio must have shape (samples,), (channels, samples) or (1, channels, samples); got {tuple(x.shape)}."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"The audio is empty (shape {tuple(x.shape)}); give a clip of at least 1/25 s of speech.")
    if x.shape[0] > 64 and x.shape[1] <= 64:
        raise ValueError(
            f"Audio shape {tuple(x.shape)} looks like (samples, channels); transpose it to (channels, samples)."
        )
    x = pcm_to_float32(x)
    if not np.all(np.isfinite(x)):
        raise ValueError("The audio contains NaN or infinite samples; clean or re-decode the audio file.")
    peak = float(np.abs(x).max())
    if peak > LOUD_PEAK:
        logger.warning("The audio's samples reach %.3g, far outside -1..1 (integer PCM stored as float?); it is "
                       "scaled to -1..1 for the lip motion, which would otherwise freeze. The sound track keeps "
                       "the samples as given (clipped); normalise the audio to -1..1 first.", peak)
        x = x * np.float32(1.0 / peak)

    mono = x[0] if x.shape[0] == 1 else np.mean(x, axis=0, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sr == SAMPLE_RATE:
        return mono

    import soxr  # local import: only needed for non-16 kHz input

    target = resampled_length(mono.shape[0], sr)
    out = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    if out.shape[0] >= target:
        out = out[:target]
    else:
        out = np.concatenate([out, np.zeros(target - out.shape[0], dtype=np.float32)])
    logger.debug("resampled %d samples at %d Hz to %d at 16 kHz", mono.shape[0], sr, target)
    return np.ascontiguousarray(out)


def num_video_frames(num_samples_16k: int) -> int:
    """``T = floor(n / 640)``: number of 25-fps frames covered by a 16 kHz waveform."""
    return int(num_samples_16k) // SAMPLES_PER_FRAME


def crop_or_pad(wav16k: np.ndarray, num_samples: int) -> np.ndarray:
    """Cut ``wav16k`` to ``num_samples`` or zero-pad it at the end up to that length."""
    if wav16k.shape[0] >= num_samples:
        return wav16k[:num_samples]
    return np.concatenate([wav16k, np.zeros(num_samples - wav16k.shape[0], dtype=wav16k.dtype)])


# ----------------------------------------------------------------------------- mel

def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (float64)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    above = f >= 1000.0
    mel = np.where(above, min_log_mel + np.log(np.maximum(f, 1e-300) / 1000.0) / logstep, mel)
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    hz = f_sp * m
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, 1000.0 * np.exp(logstep * (m - min_log_mel)), hz)


def mel_basis() -> np.ndarray:
    """Slaney-normalised triangular mel filterbank ``(80, 401)`` float32 (sr 16 kHz, n_fft 800, 55-7600 Hz)."""
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    tri = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges[2:] - edges[:-2])
    return (tri * area[:, None]).astype(np.float32)


STFT_BLOCK = 2048  # STFT frames per block (bounds memory for long clips; results do not depend on it)


def _mel_energies_padded(padded: np.ndarray) -> np.ndarray:
    """Mel energies ``(80, frames)`` float64 of ``|STFT|`` of an already padded pre-emphasised signal:
    periodic Hann 800, hop 200; frame ``j`` covers ``padded[200j : 200j+800]``."""
    n_frames = 1 + (padded.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, N_FFT),
        strides=(padded.strides[0] * HOP, padded.strides[0]),
        writeable=False,
    )
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    basis = mel_basis().astype(np.float64)  # the float32 basis in float64 (cast once: a mixed-type matmul is slow)
    out = np.empty((N_MELS, n_frames), dtype=np.float64)
    for i in range(0, n_frames, STFT_BLOCK):
        mag = np.abs(np.fft.rfft(frames[i : i + STFT_BLOCK] * window, axis=1))
        out[:, i : i + STFT_BLOCK] = basis @ mag.T
    return out


def _mel_energies(y: np.ndarray) -> np.ndarray:
    """Mel energies ``(80, frames)`` of a whole pre-emphasised signal, centred with zero padding."""
    pad = N_FFT // 2
    return _mel_energies_padded(np.pad(y, (pad, pad), mode="constant"))


def _normalise(mel: np.ndarray) -> np.ndarray:
    """Mel energies ``(80, rows)`` -> dB, symmetric normalisation to [-4, 4], transposed ``(rows, 80)``."""
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = np.clip(2 * MAX_ABS * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS, -MAX_ABS, MAX_ABS)
    return norm.T


def mel_spectrogram(wav16k: np.ndarray) -> np.ndarray:
    """Normalised log-mel spectrogram of a 16 kHz waveform (spec §5.3).

    Args:
        wav16k: ``(n,)`` mono samples at 16 kHz (normally ``n = 640*T``).

    Returns:
        ``(floor(n/200) + 1, 80)`` float64 in [-4, 4] (``floor(3.2*T) + 1`` rows for ``n = 640*T``).
        Silence is fine: magnitudes hit the 1e-5 floor and give -4.
    """
    x = np.asarray(wav16k, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"mel_spectrogram expects a non-empty 1-D waveform, got shape {tuple(x.shape)}.")
    y = lfilter([1.0, -PREEMPHASIS], [1.0], x)
    return _normalise(_mel_energies(np.ascontiguousarray(y)))


def mel_rows(wav16k: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Rows ``first .. stop-1`` of :func:`mel_spectrogram` of ``wav16k``, computed from only the
    samples they cover (``(stop - first, 80)`` float64): the long-audio path, memory bounded by the
    number of rows asked for."""
    n = wav16k.shape[0]
    n_rows = n // HOP + 1
    if not 0 <= first < stop <= n_rows:
        raise ValueError(f"mel rows {first}..{stop} are outside 0..{n_rows} of a {n}-sample waveform.")
    pad = N_FFT // 2
    lo, hi = HOP * first - pad, HOP * (stop - 1) - pad + N_FFT  # sample range of the padded frames
    a, b = max(lo, 0), min(hi, n)
    segment = np.zeros(hi - lo, dtype=np.float64)
    if b > a:
        # pre-emphasis needs the sample before a; filtering from a-1 and dropping the first output
        # gives the same values as filtering the whole signal
        start = max(a - 1, 0)
        y = lfilter([1.0, -PREEMPHASIS], [1.0], np.asarray(wav16k[start:b], dtype=np.float64))
        segment[a - lo : b - lo] = y[a - start :]
    return _normalise(_mel_energies_padded(segment))


def window_starts(num_frames: int, first: int = 0) -> np.ndarray:
    """First mel row of the windows of frames ``first .. num_frames-1``: ``trunc(16*(i-2)/5)``
    (toward zero), ``(num_frames - first,)`` int64."""
    s = 16 * (np.arange(first, num_frames, dtype=np.int64) - 2)
    return np.sign(s) * (np.abs(s) // 5)


def _window_rows(num_frames: int, n_mel: int, first: int = 0) -> np.ndarray:
    """Mel row indices ``(num_frames - first, 16)`` of each frame's window, clamped to ``[0, n_mel-1]``."""
    rows = window_starts(num_frames, first)[:, None] + np.arange(WINDOW_STEPS)[None, :]
    return np.clip(rows, 0, n_mel - 1)


def mel_windows(mel: np.ndarray, num_frames: int) -> np.ndarray:
    """One 16-row window per video frame (spec §5.4).

    Args:
        mel: ``(n_mel, 80)`` from :func:`mel_spectrogram`.
        num_frames: ``T``.

    Returns:
        ``(T, 80, 16)`` float32; rows ``start_i .. start_i+15`` clamped to ``[0, n_mel-1]``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    rows = _window_rows(num_frames, mel.shape[0])
    return np.ascontiguousarray(np.asarray(mel)[rows].transpose(0, 2, 1).astype(np.float32))


def _speech_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Mono 16 kHz samples cut to ``640*T`` and ``T``; ValueError for audio shorter than one frame."""
    wav = to_mono_16k(waveform, sample_rate)
    t = num_video_frames(wav.shape[0])
    if t < 1:
        raise ValueError(
            f"The audio is too short: {wav.shape[0]} samples at 16 kHz ({wav.shape[0] / SAMPLE_RATE * 1000:.1f} ms) "
            f"is less than one 25-fps video frame ({SAMPLES_PER_FRAME} samples, 40 ms); give a longer clip."
        )
    return wav[: t * SAMPLES_PER_FRAME], t


def audio_to_mel_windows(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Waveform (any rate/channels, see :func:`to_mono_16k`) -> mel windows ``(T, 80, 16)`` float32.

    ``T = floor(len16k / 640)``; the 16 kHz waveform is cut to ``640*T`` samples first.
    Add the batch and channel axes (``[None, :, None]``) for ``(1, T, 1, 80, 16)``.
    For long audio use :func:`lazy_mel_windows`, which computes the same windows on request.

    Raises:
        ValueError: see :func:`to_mono_16k`, or audio shorter than one 25-fps frame (640 samples
        at 16 kHz, i.e. 40 ms).
    """
    wav, t = _speech_16k(waveform, sample_rate)
    return torch.from_numpy(mel_windows(mel_spectrogram(wav), t))


class MelWindows:
    """The mel windows of a 16 kHz waveform, computed for a range of frames when asked.

    ``get(a, b)`` gives frames ``a .. b-1`` as ``(b - a, 80, 16)`` float32: the same values as
    ``audio_to_mel_windows(...)[a:b]``, computed from only the samples those frames cover, so
    memory is bounded by the range asked for, not by the clip length. Only the waveform itself
    (``(640*T,)`` float32) is kept.
    """

    def __init__(self, wav16k: np.ndarray, num_frames: int | None = None) -> None:
        wav = np.ascontiguousarray(wav16k, dtype=np.float32)
        t = num_video_frames(wav.shape[0]) if num_frames is None else int(num_frames)
        if t < 1:
            raise ValueError(f"Mel windows need at least one 25-fps frame (640 samples), got {wav.shape[0]} samples.")
        self.wav = crop_or_pad(wav, t * SAMPLES_PER_FRAME)
        self.num_frames = t
        self.num_rows = self.wav.shape[0] // HOP + 1

    def __len__(self) -> int:
        return self.num_frames

    def get(self, start: int, stop: int) -> torch.Tensor:
        """Windows of frames ``start .. stop-1``: ``(stop - start, 80, 16)`` float32."""
        start, stop = max(int(start), 0), min(int(stop), self.num_frames)
        if stop <= start:
            raise ValueError(f"No frames in {start}..{stop} (the clip has {self.num_frames}).")
        rows = _window_rows(stop, self.num_rows, start)
        first, last = int(rows.min()), int(rows.max())
        mel = mel_rows(self.wav, first, last + 1)
        return torch.from_numpy(np.ascontiguousarray(mel[rows - first].transpose(0, 2, 1).astype(np.float32)))


def lazy_mel_windows(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> MelWindows:
    """Like :func:`audio_to_mel_windows` (same checks and errors), but the windows are computed
    on request (:class:`MelWindows`), for audio of any length."""
    wav, t = _speech_16k(waveform, sample_rate)
    return MelWindows(wav, t)
