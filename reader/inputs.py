"""What predict.py and the server read besides a list file: a video or every video under a
folder, windows along long videos, the class names of a label list, and the one-line
description of a test protocol."""
import json
import logging
import os

from reader import open_video
from reader.sampling import window_spans
from reader.video_backends import VideoDecodeError
from utils.config_utils import ConfigError

logger = logging.getLogger(__name__)


class InputError(FileNotFoundError):
    """A video, folder or camera to predict from that cannot be read; one-line message."""

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.flv', '.m4v')


# the keys of a VALID/TEST/INFER section that make its test protocol (eval_results.json,
# the server's /v1/model)
PROTOCOL_KEYS = ('num_clips', 'dense_sample', 'num_crops', 'keep_ratio', 'average',
                 'short_size', 'target_size')


def protocol_text(section, seg_num):
    """One line naming the test protocol of a VALID/TEST/INFER section."""
    clips, crops = section.num_clips, section.num_crops
    sampling = (f"dense ({seg_num} frames, stride {max(1, 64 // seg_num)})"
                if section.dense_sample else f"uniform ({seg_num} segments)")
    crop = {1: 'centre crop', 3: '3 crops', 10: '10 crops'}[crops]
    scale = 'aspect kept' if section.keep_ratio else '4:3'
    views = clips * crops
    return (f"{clips} clip{'s' if clips > 1 else ''} x {crop} ({views} view"
            f"{'s' if views > 1 else ''}), {sampling}, short side {section.short_size} "
            f"({scale}), {section.target_size}px, average {section.average}")


def find_videos(folder, fmt='mp4'):
    """Every video under `folder`, recursively, sorted: the VIDEO_EXTENSIONS for mp4
    lists (any container ffmpeg decodes), .pkl files for pkl."""
    exts = ('.pkl',) if fmt == 'pkl' else VIDEO_EXTENSIONS
    found = sorted(os.path.join(root, f) for root, _, files in os.walk(folder)
                   for f in files if f.lower().endswith(exts))
    if not found:
        raise InputError(f"no videos ({', '.join('*' + e for e in exts)}) under {folder}")
    return found


def video_items(video_path, fmt):
    """--video_path: one video, or (a directory, formats mp4/pkl) every video under it."""
    if fmt != 'frames' and os.path.isdir(video_path):
        paths = find_videos(video_path, fmt)
        logger.info("%d videos under %s", len(paths), video_path)
        return [(p, -1, None) for p in paths]
    return [(video_path, -1, None)]


def video_windows(num_frames, fps, window_seconds, stride_seconds):
    """The windows of one video (reader.sampling.window_spans) -> ([(first, stop)] frame
    spans, [(start_s, end_s)] rounded to the millisecond); ValueError without a frame rate."""
    spans = window_spans(num_frames, fps, window_seconds, stride_seconds)
    return ([(first, stop) for first, stop, _, _ in spans],
            [(round(start, 3), round(end, 3)) for _, _, start, end in spans])


def window_items(items, fmt, window_seconds, stride_seconds):
    """Each video -> one item per window, `(path, -1, num_frames, (first, stop))`;
    -> (items, {item index: (start_s, end_s)}, videos that could not be opened)."""
    out, times, failed = [], {}, 0
    for path, _, nframes in (it[:3] for it in items):
        try:
            video = open_video(path, fmt, nframes)
            count, fps = video.num_frames, video.fps
            video.close()
            spans, spans_s = video_windows(count, fps, window_seconds, stride_seconds)
        except VideoDecodeError as e:
            logger.warning("skipping video: %s", e)
            failed += 1
            continue
        except ValueError as e:  # no frame rate (pkl, frame folders)
            logger.warning("skipping video: %s: %s: windows need it", path, e)
            failed += 1
            continue
        for span, span_s in zip(spans, spans_s):
            times[len(out)] = span_s
            out.append((path, -1, count, span))
    return out, times, failed


def read_labels(path, num_classes):
    """Class names from a label list ('idx name' or 'name' per line) or a JSON list/dict;
    indices as names when the file is missing."""
    if not path or not os.path.isfile(path):
        logger.warning("label file %s not found: printing class indices", path)
        return [str(i) for i in range(num_classes)]
    if path.endswith('.json'):
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        names = data if isinstance(data, list) else [n for n, _ in sorted(
            data.items(), key=lambda kv: int(kv[1]))]
    else:
        with open(path, encoding='utf-8') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        names = [ln.split(None, 1)[1] if ln.split(None, 1)[0].isdigit() and ' ' in ln else ln
                 for ln in lines]
    if len(names) != num_classes:
        raise ConfigError(f"{path} has {len(names)} class names, the model {num_classes}")
    return names
