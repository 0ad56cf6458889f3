"""What one upload may cost, checked before the work: the form's window and stride, then
the container's headers (read by PyAV within the upload allow-lists, nothing decoded),
then the frame count (packets demuxed, not decoded).  Every refusal is a DecodeFailed
whose one-line message is for the client (a 422).  serve.py's flags set the limits;
docs/serving.md lists them."""
import math
from dataclasses import dataclass
from typing import NamedTuple

MIN_STRIDE_S = 0.1  # window_seconds and stride_seconds below this are refused


class DecodeFailed(Exception):
    """The upload is not a video this server reads, or is over a limit; the message is
    for the client (no server path in it)."""


@dataclass
class DecodeLimits:
    """serve.py's decode limits (their flags: LIMIT_FLAGS)."""
    max_fps: float = 240.0
    max_duration_s: float = 3600.0
    max_frames: int = 240 * 3600
    max_pixels: int = 4096 * 2160           # width x height of one frame
    max_aspect: float = 5.0                 # long side / short side
    max_windows: int = 256
    memory_mb: int = 4096                   # address space a decode worker may add (RLIMIT_AS)


class LimitFlag(NamedTuple):
    """One of serve.py's limit flags: --name, its type, default and help (`%(default)s`
    shows the default), and where its value goes: the DecodeLimits `field`, or None for a
    connection limit (server.main.settings_of: app.Settings, transport.Limits).  Each
    must be positive, or >= 0 when zero_ok."""
    name: str
    kind: type
    default: object
    help: str
    field: str = None
    zero_ok: bool = False


_DECODE = DecodeLimits()
LIMIT_FLAGS = (
    # checked on an upload's headers before it is decoded
    LimitFlag('max_fps', float, _DECODE.max_fps, 'largest frame rate (default %(default)s)',
              'max_fps'),
    LimitFlag('max_duration', float, _DECODE.max_duration_s,
              'longest video, in seconds (default %(default)s)', 'max_duration_s'),
    LimitFlag('max_frames', int, _DECODE.max_frames, 'most frames (default %(default)s)',
              'max_frames'),
    LimitFlag('max_pixels', int, _DECODE.max_pixels,
              'largest frame, width x height (default 4096x2160)', 'max_pixels'),
    LimitFlag('max_aspect', float, _DECODE.max_aspect,
              'largest aspect ratio, long side / short side (default %(default)s)',
              'max_aspect'),
    LimitFlag('max_windows', int, _DECODE.max_windows,
              'most windows (window_seconds, stride_seconds) per request (default '
              '%(default)s)', 'max_windows'),
    LimitFlag('decode_memory_mb', int, _DECODE.memory_mb,
              "memory a decode worker may take beyond its start-up size (RLIMIT_AS, default "
              "%(default)s; 0: no cap): a decode over it fails in that worker, which is "
              "replaced", 'memory_mb', zero_ok=True),
    # the connections
    LimitFlag('max_connections', int, 64, 'open connections at once; a request beyond gets '
              '503 (default %(default)s)'),
    LimitFlag('header_timeout', float, 10, 'seconds for a request line and its headers to '
              'arrive (then 408) (default %(default)s)'),
    LimitFlag('body_timeout', float, 30, 'seconds an upload may pause, and its grace before '
              '--min_body_kbps applies (then 408) (default %(default)s)'),
    LimitFlag('min_body_kbps', float, 16, 'slowest average upload rate, in KiB/s, after '
              '--body_timeout (default %(default)s)'),
    LimitFlag('keep_alive_timeout', float, 5, 'seconds an idle kept-alive connection stays '
              'open (default %(default)s)'),
    LimitFlag('send_timeout', float, 30, 'seconds a client may read nothing of what the '
              'server sends before its connection is reset (frees its --max_online slot) '
              '(default %(default)s)'),
    LimitFlag('ws_idle_timeout', float, 60, 'seconds an online session may send nothing '
              'before it is closed (default %(default)s)'),
    LimitFlag('max_frame_pixels', int, 4096 * 4096, 'largest online camera frame, width x '
              'height, read from its header before it is decoded (default %(default)s)'),
)


def decode_limits(args):
    """serve.py's parsed flags -> DecodeLimits."""
    return DecodeLimits(**{f.field: getattr(args, f.name) for f in LIMIT_FLAGS if f.field})


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
