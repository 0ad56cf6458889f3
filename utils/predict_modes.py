"""What predict.py predicts besides a list: a folder, windows along long videos, a stream
(online TSM, file or camera); and how results are written (JSON, CSV, timeline)."""
import csv
import json
import logging
import os

import cv2
import numpy as np

from reader import open_video
from reader.sampling import window_spans
from reader.transforms import eval_views, normalize
from reader.video_backends import VideoDecodeError
from utils.config_utils import ConfigError

logger = logging.getLogger(__name__)


class InputError(FileNotFoundError):
    """A video, folder or camera to predict from that cannot be read; one-line message."""

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.flv', '.m4v')


def protocol_text(section, seg_num):
    """One line naming the test protocol of a VALID/TEST/INFER section."""
    clips, crops = section.get('num_clips', 1), section.get('num_crops', 1)
    sampling = (f"dense ({seg_num} frames, stride {max(1, 64 // seg_num)})"
                if section.get('dense_sample', False) else f"uniform ({seg_num} segments)")
    crop = {1: 'centre crop', 3: '3 crops', 10: '10 crops'}[crops]
    scale = 'aspect kept' if section.get('keep_ratio', False) else '4:3'
    views = clips * crops
    return (f"{clips} clip{'s' if clips > 1 else ''} x {crop} ({views} view"
            f"{'s' if views > 1 else ''}), {sampling}, short side {section.short_size} "
            f"({scale}), {section.target_size}px, average {section.get('average', 'prob')}")


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


def window_items(items, fmt, window_seconds, stride_seconds):
    """Each video -> one item per window, `(path, -1, num_frames, (first, stop))`;
    -> (items, {item index: (start_s, end_s)}, videos that could not be opened)."""
    out, times, failed = [], {}, 0
    for path, _, nframes in (it[:3] for it in items):
        try:
            video = open_video(path, fmt, nframes)
            count, fps = video.num_frames, video.fps
            video.close()
            spans = window_spans(count, fps, window_seconds, stride_seconds)
        except VideoDecodeError as e:
            logger.warning("skipping video: %s", e)
            failed += 1
            continue
        except ValueError as e:  # no frame rate (pkl, frame folders)
            logger.warning("skipping video: %s: %s: windows need it", path, e)
            failed += 1
            continue
        for first, stop, start, end in spans:
            times[len(out)] = (round(start, 3), round(end, 3))
            out.append((path, -1, count, (first, stop)))
    return out, times, failed


def clock(seconds):
    """00:07, 01:02:03, 00:02.5 (tenths only when the time is not whole)."""
    whole = abs(seconds - round(seconds)) < 1e-6
    s = round(seconds) if whole else seconds
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    text = f"{int(m):02d}:{int(sec):02d}" if whole else f"{int(m):02d}:{sec:04.1f}"
    return f"{int(h)}:{text}" if h else text


def report(records, names, times=None):
    """Name the classes of each record, attach window times, print; -> records as saved."""
    out, last_path = [], None
    for rec in records:
        rec = dict(rec)
        index = rec.pop('index', None)
        rec['top_names'] = [names[i] for i in rec['top_indices']]
        if times is not None:
            rec['start'], rec['end'] = times[index]
            if rec['path'] != last_path:
                print(f"{rec['path']}:")
            print(f"    {clock(rec['start'])}-{clock(rec['end'])}  {rec['top_names'][0]} "
                  f"{rec['top_probs'][0]:.2f}")
        else:
            print(f"{rec['path']}:")
            for name, prob in zip(rec['top_names'], rec['top_probs']):
                print(f"    {name}: {prob:.5f}")
        last_path = rec['path']
        out.append(rec)
    return out


def write_results(records, save_dir, name='predict_results'):
    """<save_dir>/<name>.json and .csv (one row per class of each prediction:
    path[, start, end], rank, class index, class name, probability)."""
    os.makedirs(save_dir, exist_ok=True)
    with open(os.path.join(save_dir, name + '.json'), 'w', encoding='utf-8') as f:
        json.dump(records, f, indent=2)
    windows = bool(records) and 'start' in records[0]
    with open(os.path.join(save_dir, name + '.csv'), 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['path'] + (['start_s', 'end_s'] if windows else []) +
                   ['rank', 'class_index', 'class_name', 'probability'])
        for rec in records:
            lead = [rec['path']] + ([rec['start'], rec['end']] if windows else [])
            for rank, (i, n, p) in enumerate(zip(rec['top_indices'], rec['top_names'],
                                                 rec['top_probs']), 1):
                w.writerow(lead + [rank, i, n, f"{p:.6f}"])
    logger.info("wrote %s.json and %s.csv in %s", name, name, save_dir)


# ---- online (streaming) ----

def open_stream(camera=None, path=None):
    """cv2.VideoCapture of a camera index or a file; -> (capture, fps or None)."""
    quiet = getattr(getattr(cv2, 'utils', None), 'logging', None)
    if camera is not None and quiet is not None:  # no OpenCV warning before our one line
        quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)
    cap = cv2.VideoCapture(int(camera) if camera is not None else path)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"cannot open camera {camera} (no such device here?)"
                          if camera is not None else f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, (fps if fps and 0 < fps < 1e4 else None)


def stream_frames(cap):
    """RGB uint8 frames of an open capture until it ends."""
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def run_online(online, frames, cfg, names, fps=None):
    """Feed frames (RGB uint8 [H, W, 3]) to an OnlineStream (models/online.py); print the top class whenever it
    changes.  -> per-frame records {'frame', 'time', 'class_index', 'class_name',
    'probability'} (time None without a frame rate).  Ctrl-C ends the stream."""
    sec, m = cfg.INFER, cfg.MODEL
    records, current = [], None
    try:
        for t, frame in enumerate(frames):
            view = eval_views(frame[None], sec.short_size, sec.target_size, 1,
                              sec.get('keep_ratio', False))[0]
            x = normalize(view, m.image_mean, m.image_std, 1, 1)  # [1, 3, S, S]
            logits = online.step(x)[0]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            top = int(probs.argmax())
            time = round(t / fps, 3) if fps else None
            records.append({'frame': t, 'time': time, 'class_index': top,
                            'class_name': names[top], 'probability': float(probs[top])})
            if top != current:
                when = clock(time) if time is not None else f"frame {t}"
                print(f"{when}  frame {t}: {names[top]} {probs[top]:.2f}", flush=True)
                current = top
    except KeyboardInterrupt:
        logger.info("stopped after %d frames", len(records))
    return records


def write_online(records, source, save_dir):
    """<save_dir>/online_results.json (source, frames, label changes) and .csv (per frame)."""
    os.makedirs(save_dir, exist_ok=True)
    changes = [r for i, r in enumerate(records)
               if i == 0 or r['class_index'] != records[i - 1]['class_index']]
    with open(os.path.join(save_dir, 'online_results.json'), 'w', encoding='utf-8') as f:
        json.dump({'source': source, 'frames': records, 'changes': changes}, f, indent=1)
    with open(os.path.join(save_dir, 'online_results.csv'), 'w', newline='',
              encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['frame', 'time_s', 'class_index', 'class_name', 'probability'])
        for r in records:
            w.writerow([r['frame'], '' if r['time'] is None else r['time'], r['class_index'],
                        r['class_name'], f"{r['probability']:.6f}"])
    logger.info("wrote online_results.json and online_results.csv in %s", save_dir)


def online_job(args, cfg, streams, names):
    """predict.py --online: one video file (--video_path) or a camera (--camera N);
    `streams(window)` makes the OnlineStream (utils.jobs.online_for_inference)."""
    window = cfg.MODEL.seg_num if args.online_window is None else args.online_window
    try:
        online = streams(window)
    except ValueError as e:  # window
        raise ConfigError(str(e)) from None
    if args.camera is not None:
        source, path = f"camera {args.camera}", None
    else:
        path = source = args.video_path or cfg.INFER.video_path
        if not path or not os.path.isfile(path):
            raise InputError("--online needs --video_path FILE (one video) or "
                                    f"--camera N; got {path!r}")
    cap, fps = open_stream(args.camera, path)
    logger.info("online TSM over %s: one frame at a time, score = head over the last %s",
                source, f"{window} frames" if window else "every frame seen so far")
    try:
        records = run_online(online, stream_frames(cap), cfg, names, fps)
    finally:
        cap.release()
    if not records:
        raise InputError(f"{source}: no frame could be read")
    write_online(records, source, args.save_dir)
    return records
