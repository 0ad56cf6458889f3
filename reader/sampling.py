"""Which frames a clip takes: the original's segment-based sampling (TSN style), the
test-time protocols (several uniform clips, dense clips) and windows along long videos.
Pure functions of the frame count: no decoding here."""
import math

import numpy as np


def segment_indices(num_frames, seg_num, seglen, mode, rng=None, centre_window=False):
    """Frame indices, seg_num * seglen of them, in time order.

    The video is cut into seg_num segments of `average_dur = num_frames // seg_num`
    frames.  Training takes `seglen` consecutive frames at a random offset in each
    segment; evaluation takes them from the middle: from offset `(average_dur - 1) // 2`
    (the original's mp4 branch), or with `centre_window` from `(average_dur - seglen) // 2`
    (its pkl branch; the two differ only when seglen > 1).  Short videos fall back to
    `i * average_dur`, then to `i`; every index is taken modulo num_frames.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    average_dur = num_frames // seg_num
    indices = []
    for i in range(seg_num):
        offset = 0
        if average_dur >= seglen:  # (the random draw only here: seeded runs repeat exactly)
            offset = (int(rng.integers(0, average_dur - seglen + 1)) if mode == 'train'
                      else (average_dur - (seglen if centre_window else 1)) // 2)
        indices.extend(segment_frames(i, average_dur, seglen, num_frames, offset))
    return indices


def segment_frames(i, average_dur, seglen, num_frames, offset):
    """The seglen frame indices of segment i: from `offset` frames into the segment when
    it holds seglen frames; else (short videos) from the segment's first frame, or frame
    i when the video has fewer frames than segments, wrapping around."""
    if average_dur >= seglen:
        start = i * average_dur + offset
    elif average_dur >= 1:
        start = i * average_dur
    else:
        start = i
    return [j % num_frames for j in range(start, start + seglen)]


DENSE_WINDOW = 64  # frames spanned by one dense clip (I3D / MIT dense sampling)


def uniform_clip_indices(num_frames, seg_num, seglen, num_clips, centre_window=False):
    """Test-time indices of `num_clips` clips, TSN style: one list per clip.

    Each of the seg_num segments of `average_dur = num_frames // seg_num` frames gives
    clip k its frame at the point (k + 1/2) / num_clips of the segment (the frame at that
    point, or just before it when the point falls on a frame boundary):
    `((2k + 1) * average_dur - 1) // (2 * num_clips)`.  With one clip this is the model
    zoo's `(average_dur - 1) // 2`, so num_clips=1 is `segment_indices(..., 'test')`.
    `centre_window` centres the seglen frames on that point instead,
    `((2k + 1) * average_dur - num_clips * seglen) // (2 * num_clips)` kept inside the
    segment: one clip is the original pkl branch's `(average_dur - seglen) // 2`.
    Short videos fall back as segment_indices does (every clip then takes the same frames).
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    average_dur = num_frames // seg_num
    width = num_clips * seglen if centre_window else 1
    clips = []
    for k in range(num_clips):
        offset = ((2 * k + 1) * average_dur - width) // (2 * num_clips)
        if centre_window:
            offset = min(max(offset, 0), average_dur - seglen)
        clips.append([f for i in range(seg_num)
                      for f in segment_frames(i, average_dur, seglen, num_frames, offset)])
    return clips


def dense_clip_indices(num_frames, seg_num, seglen, num_clips, window=DENSE_WINDOW):
    """Test-time dense sampling (MIT's `_get_test_indices` with dense_sample): each clip
    is seg_num frames `window // seg_num` apart inside a `window`-frame span; the spans
    start at `np.linspace(0, sample_pos - 1, num_clips, dtype=int)` with
    `sample_pos = max(1, 1 + num_frames - window)`, i.e. spread evenly over the video.
    One clip: the span in the middle, start `(sample_pos - 1) // 2`.  Indices wrap
    modulo num_frames (videos shorter than the window)."""
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    sample_pos = max(1, 1 + num_frames - window)
    stride = max(1, window // seg_num)
    if num_clips == 1:
        starts = [(sample_pos - 1) // 2]
    else:
        starts = np.linspace(0, sample_pos - 1, num=num_clips, dtype=int).tolist()
    return [[(i * stride + start + j) % num_frames for i in range(seg_num) for j in range(seglen)]
            for start in starts]


def eval_clip_indices(num_frames, seg_num, seglen, num_clips=1, dense=False,
                      centre_window=False):
    """The clips of one video at test time: a list of num_clips index lists
    (`centre_window`: see uniform_clip_indices; the original's pkl format)."""
    if dense:
        return dense_clip_indices(num_frames, seg_num, seglen, num_clips)
    return uniform_clip_indices(num_frames, seg_num, seglen, num_clips, centre_window)


def window_spans(num_frames, fps, window_seconds, stride_seconds):
    """Windows along a long video -> [(first_frame, stop_frame, start_s, end_s)].

    Window k starts at k * stride seconds and holds the frames whose timestamp i / fps
    lies in [start, end), end = start + window.  The last window is the first that
    reaches the end of the video: it is cut there, or stretched to it when less than
    half a window would be left after it (no sliver windows).  A video shorter than the
    window is one window."""
    if fps is None or fps <= 0:
        raise ValueError("the video's frame rate is unknown")
    if window_seconds <= 0 or stride_seconds <= 0:
        raise ValueError("window and stride must be positive")
    duration = num_frames / fps
    spans, k = [], 0
    while True:
        start = k * stride_seconds
        end = min(start + window_seconds, duration)
        if duration - end < window_seconds / 2:
            end = duration
        first = min(int(math.ceil(start * fps - 1e-6)), num_frames - 1)
        stop = max(min(int(math.ceil(end * fps - 1e-6)), num_frames), first + 1)
        spans.append((first, stop, start, end))
        if end >= duration:
            return spans
        k += 1
