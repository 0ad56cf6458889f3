"""Built-in synthetic demo dataset where the ORDER of frames decides the class.

Eight classes in four pairs; within a pair the two classes are exact time
reversals of each other::

    0 moving_up    <-> 1 moving_down
    2 growing      <-> 3 shrinking
    4 fading_in    <-> 5 fading_out
    6 splitting    <-> 7 merging

Every clip shows one (or, for splitting/merging, two) randomly textured
objects (checker / stripes / blob texture, random colours, square or disc
shape) on a noisy textured background, with random speed, size, start
position and colours.  The clip of the odd class of a pair is an
independently sampled rendering of the even class, played backwards
(``frames[::-1]``).  Hence, within a pair, the distribution of single frames
and of any order-less set of frames is identical: a frame-order-blind model
(TSN: average of per-frame features) is at chance within each pair (about
50% top-1 overall, since it can still tell the pairs apart), while a model
that mixes information across time (TSM) can learn all eight classes.

Design choices that keep the dataset order-blind-proof:

* All four pairs are invariant under horizontal flipping (no left/right or
  clockwise/counter-clockwise classes), so the usual random horizontal flip
  augmentation of video readers does not corrupt the labels.
* H.264 videos are encoded intra-only (every frame a key frame) at a
  constant quantiser, so each frame is compressed independently of its
  neighbours: the decoded frames of a reversed clip are the reversed decoded
  frames, and compression artefacts carry no hint of the time direction.
  (Intra-only also makes seeking / decoding of any frame cheap.)
* The default clip length is 24 = 8 x 3 frames: with 8 segments of odd
  length 3 the usual test-time sampling (centre frame of each segment) picks
  a set of frame indices that is symmetric under reversal, and the
  train-time sampling (random frame in each segment) is symmetric in
  distribution for any length divisible by 8.

Usage::

    python -m data.demo_dataset --out_dir data/demo --train_per_class 48 \
        --val_per_class 16 --seed 0 --size 64 --frames 24

    from data.demo_dataset import generate
    info = generate("data/demo", 48, 16)   # returns paths of the list files
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np

try:  # tqdm is optional: fall back to no progress bar
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = [
    "CLASSES", "PAIRS", "DEFAULT_NUM_FRAMES", "DEFAULT_SIZE", "DEFAULT_FPS",
    "DEFAULT_TRAIN_PER_CLASS", "DEFAULT_VAL_PER_CLASS",
    "DEFAULT_INFER_PER_CLASS",
    "render_clip", "clip_rng", "render_dataset_clip", "write_video",
    "read_video", "generate", "is_complete", "main",
]

CLASSES = [
    "moving_up", "moving_down",
    "growing", "shrinking",
    "fading_in", "fading_out",
    "splitting", "merging",
]
# (forward class, reversed class) for each pair
PAIRS = [(2 * p, 2 * p + 1) for p in range(len(CLASSES) // 2)]

DEFAULT_NUM_FRAMES = 24
DEFAULT_SIZE = 64
DEFAULT_FPS = 12
DEFAULT_TRAIN_PER_CLASS = 48
DEFAULT_VAL_PER_CLASS = 16
DEFAULT_INFER_PER_CLASS = 1
DEFAULT_QP = 16

_FORMAT_VERSION = 1
_SPLIT_IDS = {"train": 0, "val": 1}
_TEX_RES = 64  # resolution at which object textures are drawn


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------

def _rand_colour(rng, lo=0, hi=256):
    return rng.integers(lo, hi, size=3).astype(np.float32)


def _background(rng, size):
    """Static textured background: smooth colour blobs + fine grain."""
    base = _rand_colour(rng, 60, 196)
    g = int(rng.integers(3, 8))
    coarse = rng.uniform(-1.0, 1.0, size=(g, g, 3)).astype(np.float32)
    coarse = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    amp = float(rng.uniform(15.0, 40.0))
    fine = rng.normal(0.0, 1.0, size=(size, size, 1)).astype(np.float32)
    fine_amp = float(rng.uniform(4.0, 12.0))
    bg = base + amp * coarse + fine_amp * fine
    return np.clip(bg, 0.0, 255.0)


def _object_texture(rng):
    """Random two-colour texture (checker / stripes / blob) at _TEX_RES."""
    c1 = _rand_colour(rng)
    c2 = _rand_colour(rng)
    for _ in range(20):  # make the two colours clearly different
        if np.abs(c1 - c2).sum() >= 150:
            break
        c2 = _rand_colour(rng)
    kind = int(rng.integers(0, 3))
    n = _TEX_RES
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    if kind == 0:  # checker board
        cells = float(rng.integers(2, 5))
        w = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(
            np.float32)
    elif kind == 1:  # stripes with a random orientation
        theta = float(rng.uniform(0.0, np.pi))
        freq = float(rng.uniform(2.0, 4.5))
        proj = xx * np.cos(theta) + yy * np.sin(theta)
        w = (np.sin(2 * np.pi * freq * proj) > 0).astype(np.float32)
    else:  # smooth random blob texture
        g = int(rng.integers(3, 6))
        w = rng.uniform(0.0, 1.0, size=(g, g)).astype(np.float32)
        w = cv2.resize(w, (n, n), interpolation=cv2.INTER_CUBIC)
        w = np.clip((w - w.mean()) * 3.0 + 0.5, 0.0, 1.0)
    tex = c1 + (c2 - c1) * w[..., None]
    shape = int(rng.integers(0, 2))  # 0 square, 1 disc
    return {"tex": tex.astype(np.float32), "shape": shape}


def _shape_mask(shape, side_px):
    """Anti-aliased square / disc mask of side_px x side_px pixels."""
    if shape == 0:
        return np.ones((side_px, side_px), np.float32)
    c = (side_px - 1) / 2.0
    yy, xx = np.mgrid[0:side_px, 0:side_px].astype(np.float32)
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    return np.clip(side_px / 2.0 - r + 0.5, 0.0, 1.0)


def _composite(frame, obj, cx, cy, side, alpha):
    """Paste obj (texture, shape) centred at (cx, cy) with given side/alpha.

    Sub-pixel placement via an affine warp; the texture is first resized
    with area interpolation (no aliasing when the object is small)."""
    size = frame.shape[0]
    side_px = max(2, int(round(side)))
    tex = cv2.resize(obj["tex"], (side_px, side_px),
                     interpolation=cv2.INTER_AREA)
    mask = _shape_mask(obj["shape"], side_px)
    # map texture pixel centre (side_px-1)/2 onto (cx, cy) (pixel coords)
    tx = cx - 0.5 - (side_px - 1) / 2.0
    ty = cy - 0.5 - (side_px - 1) / 2.0
    m = np.float32([[1, 0, tx], [0, 1, ty]])
    tex_w = cv2.warpAffine(tex, m, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    mask_w = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = (alpha * mask_w)[..., None]
    return frame * (1.0 - a) + tex_w * a


def _drift(rng, s, amount):
    """A small random (sign-symmetric) drift over the clip, in pixels."""
    return float(rng.uniform(-amount, amount)) * s


def _forward_program(pair, rng, s):
    """Per-clip parameters of the forward (even) class of a pair.

    Returns (objects, fn) where fn(u) -> list of (cx, cy, side, alpha), one
    per object, for normalised time u in [0, 1]."""
    if pair == 0:  # moving_up
        obj = _object_texture(rng)
        side = float(rng.uniform(0.22, 0.32)) * s
        dist = min(float(rng.uniform(0.45, 0.75)) * s, s - side - 0.02 * s)
        lo, hi = side / 2.0, s - side / 2.0 - dist
        y_end = float(rng.uniform(lo, max(lo, hi)))
        y_start = y_end + dist
        x0 = float(rng.uniform(side / 2.0, s - side / 2.0))
        x1 = float(np.clip(x0 + _drift(rng, s, 0.12), side / 2.0,
                           s - side / 2.0))

        def fn(u):
            return [(x0 + (x1 - x0) * u, y_start + (y_end - y_start) * u,
                     side, 1.0)]
        return [obj], fn

    if pair == 1:  # growing
        obj = _object_texture(rng)
        s0 = float(rng.uniform(0.10, 0.20)) * s
        s1 = float(rng.uniform(0.60, 0.85)) * s
        cx0 = float(rng.uniform(0.35, 0.65)) * s
        cy0 = float(rng.uniform(0.35, 0.65)) * s
        cx1 = cx0 + _drift(rng, s, 0.06)
        cy1 = cy0 + _drift(rng, s, 0.06)

        def fn(u):
            return [(cx0 + (cx1 - cx0) * u, cy0 + (cy1 - cy0) * u,
                     s0 + (s1 - s0) * u, 1.0)]
        return [obj], fn

    if pair == 2:  # fading_in
        obj = _object_texture(rng)
        side = float(rng.uniform(0.30, 0.45)) * s
        a0 = float(rng.uniform(0.0, 0.08))
        a1 = float(rng.uniform(0.92, 1.0))
        cx0 = float(rng.uniform(side / 2.0, s - side / 2.0))
        cy0 = float(rng.uniform(side / 2.0, s - side / 2.0))
        cx1 = float(np.clip(cx0 + _drift(rng, s, 0.08), side / 2.0,
                            s - side / 2.0))
        cy1 = float(np.clip(cy0 + _drift(rng, s, 0.08), side / 2.0,
                            s - side / 2.0))

        def fn(u):
            return [(cx0 + (cx1 - cx0) * u, cy0 + (cy1 - cy0) * u,
                     side, a0 + (a1 - a0) * u)]
        return [obj], fn

    if pair == 3:  # splitting (two objects moving apart horizontally)
        obj_a = _object_texture(rng)
        obj_b = _object_texture(rng)
        side = float(rng.uniform(0.20, 0.28)) * s
        sep0 = float(rng.uniform(0.0, 0.10)) * s
        sep1 = min(float(rng.uniform(0.50, 0.72)) * s, s - side - 0.02 * s)
        cx = float(rng.uniform(side / 2.0 + sep1 / 2.0,
                               s - side / 2.0 - sep1 / 2.0))
        cy = float(rng.uniform(side / 2.0, s - side / 2.0))
        tilt = _drift(rng, s, 0.08)  # small vertical offset of the 2 objects
        a_left = bool(rng.integers(0, 2))  # which texture goes left
        objs = [obj_a, obj_b]
        if bool(rng.integers(0, 2)):  # which one is drawn on top
            objs = objs[::-1]
            a_left = not a_left

        def fn(u):
            sep = sep0 + (sep1 - sep0) * u
            dy = tilt * u / 2.0
            left = (cx - sep / 2.0, cy - dy, side, 1.0)
            right = (cx + sep / 2.0, cy + dy, side, 1.0)
            return [left, right] if a_left else [right, left]
        return objs, fn

    raise ValueError("bad pair index %r" % (pair,))


def render_clip(class_index, rng, num_frames=DEFAULT_NUM_FRAMES,
                size=DEFAULT_SIZE):
    """Render one clip of class ``class_index``.

    rng: a ``numpy.random.Generator`` (or an int seed).  Returns a uint8
    array [num_frames, size, size, 3] in RGB order.  The rendering consumes
    the RNG identically for both classes of a pair, and the odd class of a
    pair is the even class's rendering reversed in time, so with
    identically-seeded generators
    ``render_clip(2p+1, g1) == render_clip(2p, g2)[::-1]``.
    """
    if not 0 <= int(class_index) < len(CLASSES):
        raise ValueError("class_index must be in [0, %d)" % len(CLASSES))
    if num_frames < 2:
        raise ValueError("num_frames must be >= 2")
    if size < 8:
        raise ValueError("size must be >= 8")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    class_index = int(class_index)
    pair, reverse = divmod(class_index, 2)
    s = int(size)

    bg = _background(rng, s)
    objs, fn = _forward_program(pair, rng, float(s))
    noise_sigma = float(rng.uniform(2.0, 6.0))
    noise = rng.normal(0.0, noise_sigma,
                       size=(num_frames, s, s, 3)).astype(np.float32)

    frames = np.empty((num_frames, s, s, 3), np.uint8)
    for k in range(num_frames):
        u = k / (num_frames - 1)
        frame = bg.copy()
        for obj, (cx, cy, side, alpha) in zip(objs, fn(u)):
            frame = _composite(frame, obj, cx, cy, side, alpha)
        frame += noise[k]
        frames[k] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    if reverse:
        frames = frames[::-1].copy()
    return frames


def clip_rng(seed, split, class_index, index):
    """The generator used for clip ``index`` of ``class_index`` in ``split``.

    Every clip has its own independent stream, so the clip does not depend
    on how many other clips are generated."""
    split_id = _SPLIT_IDS[split] if isinstance(split, str) else int(split)
    return np.random.default_rng(
        [int(seed), split_id, int(class_index), int(index)])


def render_dataset_clip(seed, split, class_index, index,
                        num_frames=DEFAULT_NUM_FRAMES, size=DEFAULT_SIZE):
    """Exactly the frames that :func:`generate` writes for that video."""
    return render_clip(class_index, clip_rng(seed, split, class_index, index),
                       num_frames, size)


# --------------------------------------------------------------------------
# video I/O
# --------------------------------------------------------------------------

def _ffmpeg_exe():
    try:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.exists(exe):
            return exe
    except Exception:
        pass
    return shutil.which("ffmpeg")


_H264_OK = None


def _h264_available():
    """True when an ffmpeg binary with libx264 is available (cached)."""
    global _H264_OK
    if _H264_OK is None:
        exe = _ffmpeg_exe()
        ok = False
        if exe:
            try:
                out = subprocess.run([exe, "-hide_banner", "-encoders"],
                                     capture_output=True, text=True,
                                     timeout=30).stdout
                ok = " libx264 " in out
            except Exception:
                ok = False
        _H264_OK = ok
    return _H264_OK


def _resolve_codec(codec):
    if codec == "auto":
        return "h264" if _h264_available() else "mp4v"
    if codec not in ("h264", "mp4v"):
        raise ValueError("codec must be 'auto', 'h264' or 'mp4v'")
    if codec == "h264" and not _h264_available():
        raise RuntimeError("no ffmpeg binary with libx264 found")
    return codec


def write_video(path, frames, fps=DEFAULT_FPS, codec="auto", qp=DEFAULT_QP):
    """Write uint8 RGB frames [T, H, W, 3] to an mp4 file.

    codec 'h264': the ffmpeg binary (imageio-ffmpeg's, else the one on PATH)
    with libx264, intra-only, constant quantiser ``qp``, yuv420p.
    codec 'mp4v': OpenCV's VideoWriter (MPEG-4 part 2).
    'auto' picks h264 when available.  H and W must be even for h264."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, c = frames.shape
    if c != 3:
        raise ValueError("frames must be [T, H, W, 3]")
    codec = _resolve_codec(codec)
    tmp = path + ".part.mp4"
    if codec == "h264":
        if h % 2 or w % 2:
            raise ValueError("h264/yuv420p needs even frame sizes")
        cmd = [
            _ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "%dx%d" % (w, h),
            "-r", str(fps), "-i", "-", "-an",
            "-c:v", "libx264", "-preset", "fast", "-qp", str(int(qp)),
            "-g", "1", "-bf", "0", "-pix_fmt", "yuv420p", "-threads", "1",
            "-movflags", "+faststart", "-f", "mp4", tmp,
        ]
        proc = subprocess.run(cmd, input=frames.tobytes(),
                              capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError("ffmpeg failed on %s: %s" % (
                path, proc.stderr.decode(errors="replace")[-2000:]))
    else:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"),
                                 float(fps), (w, h))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot open an mp4v writer for "
                               + path)
        try:
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        except Exception:
            pass
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
    os.replace(tmp, path)
    return path


def read_video(path):
    """Decode a whole video with OpenCV; uint8 RGB array [T, H, W, 3]."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise IOError("cannot open video " + path)
    frames = []
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise IOError("no frames decoded from " + path)
    return np.stack(frames)


# --------------------------------------------------------------------------
# dataset generation
# --------------------------------------------------------------------------

def _meta_params(num_train_per_class, num_val_per_class, num_frames, size,
                 seed, fps, codec, num_infer_per_class):
    return {
        "format_version": _FORMAT_VERSION,
        "classes": list(CLASSES),
        "train_per_class": int(num_train_per_class),
        "val_per_class": int(num_val_per_class),
        "infer_per_class": int(num_infer_per_class),
        "num_frames": int(num_frames),
        "size": int(size),
        "seed": int(seed),
        "fps": fps,
        "codec": codec,
    }


def _read_list(path):
    with open(path) as f:
        return [ln.split() for ln in f if ln.strip()]


def is_complete(out_dir, params):
    """True when out_dir holds a complete dataset made with ``params``."""
    out_dir = os.path.abspath(out_dir)
    meta_path = os.path.join(out_dir, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if meta.get("params") != params:
        return False
    try:
        for name, n in (("train.list", params["train_per_class"]),
                        ("val.list", params["val_per_class"])):
            rows = _read_list(os.path.join(out_dir, name))
            if len(rows) != n * len(CLASSES):
                return False
            for row in rows:
                if len(row) != 2 or not os.path.isfile(row[0]):
                    return False
        for row in _read_list(os.path.join(out_dir, "infer.list")):
            if not os.path.isfile(row[0]):
                return False
        with open(os.path.join(out_dir, "label_list.txt")) as f:
            if [ln.strip() for ln in f if ln.strip()] != list(CLASSES):
                return False
    except OSError:
        return False
    return True


def _clean_old_videos(video_root):
    """Remove videos of a previous generation (only our own file names)."""
    pat = re.compile(r"^(%s)_\d+\.mp4(\.part\.mp4)?$" % "|".join(CLASSES))
    for split in _SPLIT_IDS:
        d = os.path.join(video_root, split)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if pat.match(name):
                os.remove(os.path.join(d, name))


def generate(out_dir, num_train_per_class=DEFAULT_TRAIN_PER_CLASS,
             num_val_per_class=DEFAULT_VAL_PER_CLASS,
             num_frames=DEFAULT_NUM_FRAMES, size=DEFAULT_SIZE, seed=0,
             progress=True, fps=DEFAULT_FPS, codec="auto",
             num_infer_per_class=DEFAULT_INFER_PER_CLASS, workers=None,
             force=False):
    """Generate the demo dataset into ``out_dir``.

    Writes ``videos/{train,val}/<class>_<k>.mp4``, ``train.list`` /
    ``val.list`` (``<absolute path> <label>`` per line, balanced, grouped by
    class), ``infer.list`` (the first ``num_infer_per_class`` val videos of
    each class, same ``path label`` format), ``label_list.txt`` (class names
    in label order) and ``meta.json``.  When ``out_dir`` already holds a
    complete dataset made with the same parameters nothing is regenerated
    (unless ``force``).  Returns a dict with the paths and ``skipped``.
    """
    if size % 2:
        raise ValueError("size must be even")
    if num_train_per_class < 1 or num_val_per_class < 1:
        raise ValueError("need at least one train and one val video/class")
    num_infer_per_class = min(int(num_infer_per_class),
                              int(num_val_per_class))
    codec = _resolve_codec(codec)
    out_dir = os.path.abspath(out_dir)
    params = _meta_params(num_train_per_class, num_val_per_class, num_frames,
                          size, seed, fps, codec, num_infer_per_class)
    info = _dataset_paths(out_dir)
    if not force and is_complete(out_dir, params):
        info["skipped"] = True
        return info

    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(info["meta"]):
        os.remove(info["meta"])  # invalid until this run completes
    video_root = os.path.join(out_dir, "videos")
    _clean_old_videos(video_root)
    jobs = _video_jobs(video_root, num_train_per_class, num_val_per_class)

    def work(job):
        split, ci, k, path = job
        frames = render_dataset_clip(seed, split, ci, k, num_frames, size)
        write_video(path, frames, fps=fps, codec=codec)
        return job

    _run_jobs(work, jobs, workers, progress)
    _write_lists(info, jobs, num_infer_per_class)
    with open(info["meta"] + ".tmp", "w") as f:
        json.dump({"params": params,
                   "num_train": num_train_per_class * len(CLASSES),
                   "num_val": num_val_per_class * len(CLASSES)}, f, indent=1)
    os.replace(info["meta"] + ".tmp", info["meta"])
    info["skipped"] = False
    return info


def _dataset_paths(out_dir):
    """The files of a dataset in ``out_dir`` and its classes."""
    return {
        "out_dir": out_dir,
        "train_list": os.path.join(out_dir, "train.list"),
        "val_list": os.path.join(out_dir, "val.list"),
        "infer_list": os.path.join(out_dir, "infer.list"),
        "label_list": os.path.join(out_dir, "label_list.txt"),
        "meta": os.path.join(out_dir, "meta.json"),
        "num_classes": len(CLASSES),
        "classes": list(CLASSES),
    }


def _video_jobs(video_root, num_train_per_class, num_val_per_class):
    """-> [(split, class_index, k, path)], grouped by split then class; makes the
    split folders."""
    jobs = []
    for split, n in (("train", num_train_per_class),
                     ("val", num_val_per_class)):
        d = os.path.join(video_root, split)
        os.makedirs(d, exist_ok=True)
        for ci, name in enumerate(CLASSES):
            for k in range(int(n)):
                jobs.append((split, ci, k,
                             os.path.join(d, "%s_%d.mp4" % (name, k))))
    return jobs


def _run_jobs(work, jobs, workers, progress):
    """work(job) for every job on a thread pool, with a progress bar on a terminal."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    show = bool(progress) and tqdm is not None and sys.stderr.isatty()
    bar = tqdm(total=len(jobs), desc="demo dataset", unit="video",
               disable=not show) if tqdm is not None else None
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            for _ in ex.map(work, jobs):
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _write_lines(path, rows):
    with open(path + ".tmp", "w") as f:
        for row in rows:
            f.write(row + "\n")
    os.replace(path + ".tmp", path)


def _write_lists(info, jobs, num_infer_per_class):
    """train.list, val.list, infer.list (``path label``) and label_list.txt."""
    for split, key in (("train", "train_list"), ("val", "val_list")):
        _write_lines(info[key], ["%s %d" % (p, ci)
                                 for s, ci, k, p in jobs if s == split])
    _write_lines(info["infer_list"],
                 ["%s %d" % (p, ci) for s, ci, k, p in jobs
                  if s == "val" and k < num_infer_per_class])
    _write_lines(info["label_list"], CLASSES)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data.demo_dataset",
        description="Generate the synthetic frame-order demo dataset "
                    "(8 classes in 4 time-reversed pairs).")
    ap.add_argument("--out_dir", default=os.path.join("data", "demo"))
    ap.add_argument("--train_per_class", type=int,
                    default=DEFAULT_TRAIN_PER_CLASS)
    ap.add_argument("--val_per_class", type=int,
                    default=DEFAULT_VAL_PER_CLASS)
    ap.add_argument("--infer_per_class", type=int,
                    default=DEFAULT_INFER_PER_CLASS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE,
                    help="frame height = width in pixels (even)")
    ap.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES,
                    help="frames per video (a multiple of 8 with an odd "
                         "quotient, e.g. 24 or 40, keeps 8-segment centre "
                         "sampling symmetric under time reversal)")
    ap.add_argument("--fps", type=int, default=DEFAULT_FPS)
    ap.add_argument("--codec", choices=["auto", "h264", "mp4v"],
                    default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--force", action="store_true",
                    help="regenerate even if a matching dataset exists")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)
    info = generate(args.out_dir, args.train_per_class, args.val_per_class,
                    num_frames=args.frames, size=args.size, seed=args.seed,
                    progress=not args.no_progress, fps=args.fps,
                    codec=args.codec,
                    num_infer_per_class=args.infer_per_class,
                    workers=args.workers, force=args.force)
    print("%s demo dataset in %s\n  train list: %s\n  val list:   %s\n"
          "  infer list: %s\n  label list: %s" % (
              "existing" if info["skipped"] else "generated",
              info["out_dir"], info["train_list"], info["val_list"],
              info["infer_list"], info["label_list"]))
    return info


if __name__ == "__main__":
    main()
