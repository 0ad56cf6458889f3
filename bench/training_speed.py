"""What training's time goes to: reading clips (the reader per worker against ffmpeg alone
and against decoding every frame with OpenCV; 1 vs 2 DataLoader workers; pkl and frame
folders vs mp4) and the training step (clips/s and peak memory of TSM and TSN).

    python bench/training_speed.py [--quick] [--parts reader,step] [--out FILE]

reader  Clips: ../shared/realclips (common.clips) when present, else generated ones.  Costs
        are CPU seconds (user+sys) per clip, which other processes' load hardly changes;
        the worker scaling is wall time (it is about parallelism).  The reader is the
        test-mode item of KineticsReader: open, sample 8 frames, decode them, scale, centre
        crop, normalise.  The resize (Pillow's BILINEAR, as the original; see
        reader/transforms.py) is timed on its own: CPU ms per 1920x1080 -> 341x256 frame
        against OpenCV's INTER_LINEAR, and its share of each clip's reading time.  Worker
        scaling is the steady state of a long stream (the clips repeated and shuffled, as an
        epoch is): clips per second from the first batch on, 1 vs 2 workers, alternating.
        The same stream read by plain processes (a multiprocessing pool, no DataLoader)
        gives the machine's own ceiling for two decodes at once (decode_process_scaling).
step    Training step throughput (clips/s) and peak memory (RSS) of TSM and TSN on the CPU,
        each in a process of its own (--quick: both in this one, the peak memory then the
        larger one's).  Random data, Momentum, cross-entropy, eager float32.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402

import numpy as np  # noqa: E402

PARTS = ('reader', 'step')


# ---- reader ----

def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ffmpeg_cpu(path):
    """CPU seconds of the ffmpeg binary alone decoding every frame, one thread."""
    import imageio_ffmpeg
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-nostdin', '-loglevel', 'error', '-threads', '1',
           '-i', path, '-map', '0:v:0', '-f', 'null', '-']
    before = child_cpu()
    subprocess.run(cmd, check=True, capture_output=True)
    return child_cpu() - before


def opencv_all_cpu(path, dataset):
    """Decode every frame with OpenCV (read = decode + BGR->RGB), keep the 8 the reader
    samples, same transforms: the naive reader."""
    import cv2
    from reader.sampling import eval_clip_indices
    from reader.transforms import eval_transform, normalize
    t = own_cpu()
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    idx = eval_clip_indices(len(frames), dataset.seg_num, 1)[0]
    clip = eval_transform(np.stack([frames[i] for i in idx]), dataset.short_size,
                          dataset.target_size)
    normalize(clip, dataset.mean, dataset.std, dataset.seg_num, 1)
    return own_cpu() - t


def item_cpu(dataset, i):
    t = own_cpu()
    item = dataset[i]
    assert item is not None, dataset.items[i][0]
    return own_cpu() - t


def resize_cpu(dataset, i):
    """CPU seconds of scaling clip i's sampled frames (decoded beforehand, not timed)."""
    from reader.transforms import group_scale
    frames, _ = dataset.load_frames(i, None)
    t = own_cpu()
    group_scale(frames, dataset.short_size)
    return own_cpu() - t


def resize_costs(quick):
    """CPU ms per frame, 1920x1080 -> 341x256: the reader's resize (Pillow BILINEAR) and
    OpenCV's INTER_LINEAR (what the reader used before), alternating rounds; medians."""
    import cv2
    from reader.transforms import resize
    frame = np.random.default_rng(0).integers(0, 256, (1, 1080, 1920, 3), dtype=np.uint8)
    calls = {'pil': lambda: resize(frame, 341, 256),
             'cv2_linear': lambda: cv2.resize(frame[0], (341, 256),
                                              interpolation=cv2.INTER_LINEAR)}
    n = 3 if quick else 20
    times = {k: [] for k in calls}
    for _ in range(1 if quick else 5):
        for k, call in calls.items():
            call()  # warm
            t = own_cpu()
            for _ in range(n):
                call()
            times[k].append((own_cpu() - t) / n * 1e3)
    pil, lin = float(np.median(times['pil'])), float(np.median(times['cv2_linear']))
    return {'resize_pil_ms_per_frame': pil, 'resize_cv2_linear_ms_per_frame': lin,
            'resize_pil_vs_cv2_linear': pil / lin}


def make_dataset(fmt, items, size):
    from reader.kinetics_reader import KineticsReader
    from utils.config_utils import DEFAULTS, AttrDict
    cfg = AttrDict({k: AttrDict(v) for k, v in DEFAULTS.items()})
    cfg.MODEL.format = fmt
    cfg.TEST.short_size, cfg.TEST.target_size = size * 256 // 224, size
    return KineticsReader('test', cfg, items=items)


def stream(items, repeat, seed=0):
    """The items `repeat` times over, shuffled: a stream long enough for a steady state,
    and clips of very different costs mixed as in an epoch."""
    out = list(items) * repeat
    np.random.default_rng(seed).shuffle(out)
    return out


def loader_rate(dataset, workers):
    """Clips per second through build_loader's DataLoader (batch 1), timed from the first
    batch (workers started) to the end of the stream."""
    from training.loader import build_loader
    it = iter(build_loader(dataset, 1, workers))
    next(it)
    t, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch['paths'])
    return n / (time.perf_counter() - t)


_POOL_DATASET = None


def _read_item(i):
    _POOL_DATASET[i]  # noqa: B018  (decode and transform; the result is not needed)


def process_rate(dataset, procs):
    """Clips per second of `procs` plain forked processes reading the same stream (each
    takes the next item when done): two decodes at once, with no loader around them."""
    import multiprocessing
    global _POOL_DATASET
    _POOL_DATASET = dataset
    pool = multiprocessing.get_context('fork').Pool(procs)
    pool.map(_read_item, [0] * procs)  # started, first item read
    t = time.perf_counter()
    for _ in pool.imap(_read_item, range(1, len(dataset)), chunksize=1):
        pass
    rate = (len(dataset) - 1) / (time.perf_counter() - t)
    pool.close()  # not terminate(): Paddle's signal handler would print a SIGTERM report
    pool.join()
    return rate


def per_clip_costs(res, mp4, paths, source, reps):
    """CPU seconds per clip of the reader, ffmpeg alone, OpenCV decoding every frame and
    the resize: medians over reps, clips interleaved; into res."""
    ff, ours, cv, rs = [], [], [], []
    for i, p in enumerate(paths):
        ffmpeg_cpu(p)  # page cache
        f_t, o_t, c_t, r_t = [], [], [], []
        for _ in range(reps):
            f_t.append(ffmpeg_cpu(p))
            o_t.append(item_cpu(mp4, i))
            c_t.append(opencv_all_cpu(p, mp4))
            r_t.append(resize_cpu(mp4, i))
        ff.append(np.median(f_t))
        ours.append(np.median(o_t))
        cv.append(np.median(c_t))
        rs.append(np.median(r_t))
    res['ffmpeg_cpu_s_total'] = float(np.sum(ff))
    res['reader_cpu_s_total'] = float(np.sum(ours))
    res['opencv_all_frames_cpu_s_total'] = float(np.sum(cv))
    res['reader_floor_ratio'] = float(np.sum(ours) / np.sum(ff))
    res['reader_speedup_test'] = float(np.sum(cv) / np.sum(ours))
    res['resize_share_of_reader'] = float(np.sum(rs) / np.sum(ours))
    res['per_clip'] = [{'clip': common.clip_name(p, source), 'ffmpeg': round(a, 4),
                        'reader': round(b, 4), 'opencv_all': round(c, 4), 'resize': round(r, 4)}
                       for p, a, b, c, r in zip(paths, ff, ours, cv, rs)]
    return ours


def worker_scaling(res, paths, size, quick):
    """1 vs 2 DataLoader workers (wall, steady state of a long shuffled stream), the two
    settings alternating so that drifts in the machine's speed hit both; the same stream
    through plain processes for the machine's ceiling; medians of the rounds; into res."""
    workers = min(2, len(os.sched_getaffinity(0)))
    long = make_dataset('mp4', stream([(p, 0, None) for p in paths], 1 if quick else 3), size)
    scaling, ceiling = [], []
    for _ in range(1 if quick else 3):
        scaling.append(loader_rate(long, workers) / loader_rate(long, 1))
        ceiling.append(process_rate(long, workers) / process_rate(long, 1))
    res['stream_clips'] = len(long)
    res['reader_worker_scaling'] = float(np.median(scaling))
    res['reader_worker_scaling_rounds'] = [round(x, 3) for x in scaling]
    res['decode_process_scaling'] = float(np.median(ceiling))
    res['decode_process_scaling_rounds'] = [round(x, 3) for x in ceiling]


def other_formats(res, paths, ours, tmp, size, reps):
    """pkl (data/video2pkl.py defaults: every frame as JPEG q90, full size, pickle protocol
    4; protocol 2, the original's, timed too) and frame folders against the mp4 reader."""
    import pickle
    from data.video2pkl import video_to_jpegs
    pkl_items, frame_items = [], []
    for p in paths:
        jpegs = video_to_jpegs(p)
        base = os.path.join(tmp, os.path.splitext(os.path.basename(p))[0])
        for proto, suffix in ((4, '.pkl'), (2, '.p2.pkl')):
            with open(base + suffix, 'wb') as f:
                pickle.dump((os.path.basename(p), 0, jpegs), f, protocol=proto)
        os.makedirs(base + '_frames', exist_ok=True)
        for k, j in enumerate(jpegs):
            with open(os.path.join(base + '_frames', f'img_{k + 1:05d}.jpg'), 'wb') as f:
                f.write(j)
        pkl_items.append((base + '.pkl', 0, None))
        frame_items.append((base + '_frames', 0, len(jpegs)))
    pkl2_items = [(p[:-4] + '.p2.pkl', 0, None) for p, _, _ in pkl_items]
    costs = {}
    for key, fmt, items in (('pkl', 'pkl', pkl_items), ('frames', 'frames', frame_items),
                            ('pkl2', 'pkl', pkl2_items)):
        dataset = make_dataset(fmt, items, size)
        costs[key] = [np.median([item_cpu(dataset, i) for _ in range(reps)])
                      for i in range(len(paths))]
    res['pkl_protocol2_speedup'] = float(np.sum(ours) / np.sum(costs['pkl2']))
    res['pkl_cpu_s_total'] = float(np.sum(costs['pkl']))
    res['frames_cpu_s_total'] = float(np.sum(costs['frames']))
    res['pkl_speedup'] = float(np.sum(ours) / np.sum(costs['pkl']))
    res['frames_speedup'] = float(np.sum(ours) / np.sum(costs['frames']))


def reader(args):
    """The reader part of the docstring -> dict."""
    common.set_threads(1)  # decoding is per worker: one thread each
    import paddle
    paddle.set_device('cpu')
    tmp = tempfile.mkdtemp(prefix='tsm_reader_bench_')
    try:
        paths, _, source = common.clips(tmp, 3 if args.quick else 8, args.quick)
        size = 64 if args.quick else 224
        mp4 = make_dataset('mp4', [(p, 0, None) for p in paths], size)
        reps = 1 if args.quick else 3
        res = {'clips': len(paths), 'source': source, 'reps': reps}
        ours = per_clip_costs(res, mp4, paths, source, reps)
        res.update(resize_costs(args.quick))
        worker_scaling(res, paths, size, args.quick)
        res['load_avg'] = os.getloadavg()
        other_formats(res, paths, ours, tmp, size, reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# ---- step ----

def one(kind, quick, threads):
    """Time training steps of one model in this process; -> dict."""
    common.set_threads(threads)
    import paddle
    import paddle.nn.functional as F
    paddle.set_device('cpu')
    from models.tsm import TSM
    depth, seg, size, batch, steps = (18, 4, 32, 2, 2) if quick else (50, 8, 224, 2, 3)
    paddle.seed(0)
    model = TSM(num_classes=400, seg_num=seg, num_layers=depth,
                shift_ratio=0.125 if kind == 'tsm' else 0.0)
    model.train()
    opt = paddle.optimizer.Momentum(0.001, momentum=0.9, parameters=model.parameters())
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, seg, 3, size, size)).astype('float32'))
    y = paddle.to_tensor(rng.integers(0, 400, (batch, 1)).astype('int64'))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {'clips_per_s': batch / float(np.median(times)), 'step_s': float(np.median(times)),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'rss_before_training_mb': rss_before, 'batch': batch, 'depth': depth,
            'seg_num': seg, 'size': size, 'threads': threads}


def step(args):
    """The step part of the docstring: TSM and TSN, each in a process of its own (--quick:
    this one) -> dict."""
    threads = args.threads or len(os.sched_getaffinity(0))
    res = {}
    for kind in ('tsm', 'tsn'):
        if args.quick:  # one process for both: the peak memory is then the larger one's
            r = one(kind, True, threads)
        else:
            fd, out = tempfile.mkstemp(prefix=f'tsm_train_{kind}_', suffix='.json')
            os.close(fd)
            cmd = [sys.executable, os.path.abspath(__file__), '--model', kind, '--out', out,
                   '--threads', str(threads)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            with open(out, encoding='utf-8') as f:
                r = json.load(f)
            os.remove(out)
        res[kind] = r
        res[f'train_step_clips_per_s_{kind}'] = r['clips_per_s']
        res[f'train_peak_mem_mb_{kind}'] = r['peak_rss_mb']
    res['train_step_clips_per_s'] = {k: res[f'train_step_clips_per_s_{k}'] for k in ('tsm', 'tsn')}
    res['train_peak_mem_mb'] = {k: res[f'train_peak_mem_mb_{k}'] for k in ('tsm', 'tsn')}
    return res


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--parts', default=','.join(PARTS), help='comma-separated: reader, step')
    p.add_argument('--model', choices=('tsm', 'tsn'), default=None, help='internal: one model')
    args = p.parse_args(argv)
    unknown = set(args.parts.split(',')) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {', '.join(sorted(unknown))} (use {','.join(PARTS)})")
    return args


def measure(args):
    """{part: its figures} of args.parts."""
    parts = {'reader': reader, 'step': step}
    return {name: parts[name](args) for name in args.parts.split(',')}


def main(argv=None):
    args = parse_args(argv)
    if args.model:  # a child of the step part
        threads = args.threads or len(os.sched_getaffinity(0))
        common.write_json(args.out, one(args.model, args.quick, threads))
        return
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
