"""What one upload may cost, checked before the work: the form's window and stride, then
the container's headers (read by PyAV within the upload allow-lists, nothing decoded),
then the frame count (packets demuxed, not decoded).  Every refusal is a DecodeFailed
whose one-line message is for the client (a 422).  serve.py's flags set the limits;
docs/serving.md lists them."""
import math
from dataclasses import dataclass

MIN_STRIDE_S = 0.1  # window_seconds and stride_seconds below this are refused


class DecodeFailed(Exception):
    """The upload is not a video this server reads, or is over a limit; the message is
    for the client (no server path in it)."""


@dataclass
class DecodeLimits:
    """serve.py's decode limits (see their flags in serve.py)."""
    max_fps: float = 240.0
    max_duration_s: float = 3600.0
    max_frames: int = 240 * 3600
    max_pixels: int = 4096 * 2160           # width x height of one frame
    max_aspect: float = 5.0                 # long side / short side
    max_windows: int = 256
    memory_mb: int = 4096                   # address space a decode worker may add (RLIMIT_AS)


def check_window_options(window_s, stride_s):
    """Before any work: a window and stride of at least MIN_STRIDE_S."""
    for name, value in (('window_seconds', window_s), ('stride_seconds', stride_s)):
        if value is not None and value < MIN_STRIDE_S:
            raise DecodeFailed(f"'{name}' must be at least {MIN_STRIDE_S} s, got {value:g}")


def window_count_bound(duration_s, window_s, stride_s):
    """An upper bound of reader.sampling.window_spans' count, by arithmetic (its loop
    stops at the first window that reaches the end)."""
    return math.floor(max(duration_s - window_s / 2, 0) / stride_s) + 1


def check_windows(duration_s, window_s, stride_s, limits):
    bound = window_count_bound(duration_s, window_s, stride_s)
    if bound > limits.max_windows:
        raise DecodeFailed(f"about {bound} windows of this {duration_s:.0f} s video: at most "
                           f"{limits.max_windows} per request (use a longer stride_seconds)")


def header_facts(container):
    """A PyAV container, opened and not decoded -> (width, height, fps or None,
    frames or None, duration in s or None) as its headers declare them."""
    stream = container.streams.video[0]
    codec = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    duration = None
    if container.duration:
        duration = container.duration / 1e6  # AV_TIME_BASE
    elif stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    frames = stream.frames or (round(duration * fps) if duration and fps else None)
    return codec.width, codec.height, fps, frames, duration


def check_header(width, height, fps, frames, duration, limits):
    """Refuse, before decoding, what the headers say is over a limit."""
    if not width or not height:
        raise DecodeFailed("the video stream declares no frame size")
    if width * height > limits.max_pixels:
        raise DecodeFailed(f"frames of {width}x{height}: over the limit of "
                           f"{limits.max_pixels} pixels (--max_pixels)")
    if max(width, height) > limits.max_aspect * min(width, height):
        raise DecodeFailed(f"frames of {width}x{height}: an aspect ratio over "
                           f"{limits.max_aspect:g} (--max_aspect)")
    if fps is not None and not 0 < fps <= limits.max_fps:
        raise DecodeFailed(f"a frame rate of {fps:g}: over {limits.max_fps:g} (--max_fps)")
    check_length(frames, duration, limits)


def check_length(frames, duration, limits):
    if frames is not None and frames > limits.max_frames:
        raise DecodeFailed(f"{frames} frames: over the limit of {limits.max_frames} "
                           f"(--max_frames)")
    if duration is not None and not duration <= limits.max_duration_s:
        raise DecodeFailed(f"a duration of {duration:.4g} s: over the limit of "
                           f"{limits.max_duration_s:g} s (--max_duration)")
