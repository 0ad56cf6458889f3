"""predict.py --online: a video file or a camera through online TSM (models/online.py),
one frame at a time, printing the class whenever it changes."""
import logging
import os

import cv2
import numpy as np

from jobs.predict_output import clock, write_online
from reader.inputs import InputError
from reader.transforms import frame_input
from utils.config_utils import ConfigError

logger = logging.getLogger(__name__)


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
    records, current = [], None
    try:
        for t, frame in enumerate(frames):
            logits = online.step(frame_input(frame, cfg.INFER, cfg.MODEL))[0]
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


def online_job(args, cfg, streams, names):
    """predict.py --online: one video file (--video_path) or a camera (--camera N);
    `streams(window)` makes the OnlineStream (inference.loading.online_for_inference)."""
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
