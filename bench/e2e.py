"""End to end: predict.py's own path (utils.jobs.predict_items) on real clips, one video
warm and a folder, beside PaddleVideo's published 1355 ms per 10 s video (TSM-R50,
20-core Xeon Gold 6148 + MKLDNN, decode + preprocess + model).

    python bench/e2e.py [--quick] [--reps 9] [--rounds 3] [--parts one_video,folder]
                        [--out FILE]

Model: ResNet-50 TSM of configs/tsm.yaml (8 frames, 224, 400 classes) with random weights
(BN calibrated), the engine and precision predict.py takes by default (--backend auto,
bf16 on AMX/AVX512-BF16 CPUs), exported once before any timing (warm: the process is up,
the export cached, the engine loaded).  --quick: the tests' tiny ResNet-18 on generated
clips on Paddle Inference fp32 (the quickest export), a smoke run.  Clips:
../shared/realclips when present (edgecases/ left out), else generated ones (common.clips).

  - e2e_latency_s: one 10 s clip (mmaction2_demo.mp4, 340x256, 280 frames), predict.py's
    one-video plan (decoded in this process with every core, then the engine with every
    core); median of --reps runs, each run's time in e2e_latency_runs_s.
    e2e_breakdown_s: the same clip stage by stage (medians): open (the container's
    index), decode (the 8 sampled frames), resize (Pillow, to the short side),
    crop_normalize, model, postprocess (softmax, top-k), other (the rest of the total:
    the loader, the copies).  e2e_latency_cpu_s: the process's CPU seconds per run (with
    two cores busy, the latency can fall to about half of it).
    e2e_latency_by_engine_threads_s: the same run with the engine on 1 thread and on
    every core, interleaved.  e2e_latency_by_clip_s: every clip of 9.5 s or more.
  - The folder: every clip once, in --rounds interleaved rounds (the order rotating),
    each round timing
      decode_only: the reader through predict.py's loader with 2 workers, no model;
      model_only: the engine on as many ready clips, with every core (model_only_1t:
      with one thread, which spends the fewest CPU-seconds: a two-thread engine's idle
      thread spins);
      folder: predict.py's folder plan (utils/pipeline.py), decode and engine overlapping;
    -> *_clips_per_s (medians), folder_vs_bound = folder time / max(decode-only time,
    model-only time) (median of the rounds' ratios; 1 = perfect overlap), and
    folder_vs_cpu_bound = folder time / ((decode-only CPU + model_only_1t CPU) / cores):
    on 2 cores the two share the same CPU, so their CPU-seconds add up.
  - threads_grid: folder clips/s for each (workers, engine threads), interleaved rounds;
    the default plan's choice is measured there.
"""
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from testing.models import build_tsm  # noqa: E402
from testing.tiny import tiny_sections, write_config  # noqa: E402

import numpy as np  # noqa: E402

PADDLEVIDEO_MS = 1355  # REFERENCE section 9: TSM-R50 per 10 s video, end to end, CPU
LATENCY_CLIP = 'mmaction2_demo.mp4'


def cpu_seconds(who=resource.RUSAGE_SELF):
    """User + system CPU seconds of this process (RUSAGE_CHILDREN: its joined children)."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def setup(folder, quick):
    """-> (cfg, the eager model with weights, weights path, args) as predict.py makes them."""
    import predict
    from training import checkpoint
    from utils.cli import load_config
    from utils.env import setup_runtime
    config = os.path.join(common.ROOT, 'configs', 'tsm.yaml')
    depth, classes, frames, size = 50, 400, 8, 224
    if quick:  # the shipped configs' 12 readers
        config = write_config(os.path.join(folder, 'tiny.yaml'), tiny_sections(
            kinetics_labels='', num_reader_threads=12, batch_size=1))
        depth, classes, frames, size = 18, 3, 4, 32
    model = build_tsm(depth, classes, frames, size)
    weights = os.path.join(folder, 'bench.pdparams')
    checkpoint.save_weights(model, weights)
    # --quick: Paddle Inference fp32, the quickest export
    quick_engine = ['--backend', 'paddle', '--precision', 'fp32'] if quick else []
    args = predict.parse_args(['--config', config, '--weights', weights, *quick_engine])
    cfg = load_config(args, 'INFER', {})
    setup_runtime(cfg, args)
    return cfg, model.eval(), weights, args


def engine(model, args, cfg, weights, threads):
    from inference.loading import for_inference
    return for_inference(model, args, cfg, 'INFER', weights, threads)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def breakdown(net, cfg, path, reps, cpus):
    """Medians of each stage of one clip, as the reader and predict() do them."""
    from reader import get_reader
    from reader.transforms import eval_views, group_scale, normalize
    from reader.video_backends import open_video
    from metrics import average_views
    reader = get_reader('TSM', 'infer', cfg, items=[(path, -1, None)])
    sec, m = cfg.INFER, cfg.MODEL
    stages = {k: [] for k in ('open', 'decode', 'resize', 'crop_normalize', 'model',
                              'postprocess')}
    backend = None
    for _ in range(reps):
        t, video = timed(lambda: open_video(path, 'mp4', None, cpus))
        stages['open'].append(t)
        backend = type(video).__name__
        indices = reader.sample(video.num_frames, None)
        t, frames = timed(lambda: video.get_frames(indices))
        stages['decode'].append(t)
        video.close()
        t, scaled = timed(lambda: group_scale(frames, sec.short_size, sec.keep_ratio))
        stages['resize'].append(t)
        t, clip = timed(lambda: normalize(eval_views(scaled, sec.short_size, sec.target_size)[0],
                                          m.image_mean, m.image_std, m.seg_num, m.seglen))
        stages['crop_normalize'].append(t)
        t, logits = timed(lambda: net.run(clip[None]))
        stages['model'].append(t)

        def post():
            probs = np.exp(average_views(logits.reshape(1, 1, -1), 'prob'))
            return np.argsort(-probs, axis=1)[:, :5]
        stages['postprocess'].append(timed(post)[0])
    return {k: statistics.median(v) for k, v in stages.items()}, backend


def decode_backends(path, reps, cpus):
    """Median seconds to open and decode the 8 sampled frames: the reader's backend
    (PyAV for H.264 in mp4) against decord, one FFmpeg thread and every core."""
    from reader.sampling import eval_clip_indices
    from reader.video_backends import DecordVideo, open_video
    calls = {}
    for threads in sorted({1, cpus}):
        for name, opener in (('reader', lambda t: open_video(path, 'mp4', None, t)),
                             ('decord', lambda t: DecordVideo(path, None, t))):
            def call(opener=opener, threads=threads):
                video = opener(threads)
                video.get_frames(eval_clip_indices(video.num_frames, 8, 1)[0])
                video.close()
            calls[f"{name}_{threads}t"] = call
    return {k: round(v, 4) for k, v in common.interleaved(calls, reps)[0].items()}


def one_video(res, nets, cfg, paths, durations, source, reps, quick):
    """The one-video figures of the docstring, into `res`."""
    from jobs.predict_job import predict_items
    from inference.core_plan import plan_predict
    cpus = res['cpus']
    single = plan_predict(1, cfg.INFER)
    one = next((p for p in paths if os.path.basename(p) == LATENCY_CLIP), paths[0])

    def latency(path, threads=single.engine_threads):
        return timed(lambda: predict_items(nets[threads], cfg, [(path, -1, None)], single,
                                           5))[0]
    latency(one)  # warm: caches, first allocations
    runs, cpu = [], []
    for _ in range(reps):
        c = cpu_seconds()
        runs.append(latency(one))
        cpu.append(cpu_seconds() - c)
    res['e2e_latency_clip'] = common.clip_name(one, source)
    res['e2e_latency_s'] = statistics.median(runs)
    res['e2e_latency_runs_s'] = [round(x, 4) for x in runs]
    res['e2e_latency_cpu_s'] = round(statistics.median(cpu), 4)
    res['e2e_vs_paddlevideo'] = PADDLEVIDEO_MS / 1000 / res['e2e_latency_s']
    stages, res['decode_backend'] = breakdown(nets[single.engine_threads], cfg, one, reps, cpus)
    stages['other'] = max(0.0, res['e2e_latency_s'] - sum(stages.values()))
    res['e2e_breakdown_s'] = {k: round(v, 4) for k, v in stages.items()}
    res['decode_backends_s'] = decode_backends(one, reps, cpus)
    # the engine's threads for one video: every core (the plan) against one, interleaved
    by_threads = common.interleaved({t: (lambda t=t: latency(one, t)) for t in nets}, reps)[0]
    res['e2e_latency_by_engine_threads_s'] = {str(t): round(v, 4) for t, v in by_threads.items()}
    ten = [q for q in paths if durations.get(q, 0) >= 9.5]
    res['e2e_latency_by_clip_s'] = {
        os.path.basename(q): round(statistics.median(latency(q) for _ in range(1 if quick
                                                                            else 3)), 4)
        for q in ten}
    res['load_avg_after_latency'] = os.getloadavg()
    print(f"one video ({res['e2e_latency_clip']}): {res['e2e_latency_s']:.3f} s "
          f"(PaddleVideo {PADDLEVIDEO_MS} ms: {res['e2e_vs_paddlevideo']:.1f}x), "
          f"{res['e2e_breakdown_s']}, by engine threads "
          f"{res['e2e_latency_by_engine_threads_s']}", flush=True)


def folder(res, nets, cfg, paths, rounds):
    """The folder figures of the docstring, into `res`."""
    from reader import get_reader
    from training.loader import build_loader
    from jobs.predict_job import predict_items
    from inference.core_plan import Plan, plan_predict
    cpus = res['cpus']
    items = [(q, -1, None) for q in paths]
    shape = [cfg.MODEL.seg_num, 3 * cfg.MODEL.seglen, cfg.INFER.target_size,
             cfg.INFER.target_size]
    clip = np.random.default_rng(0).standard_normal([1, *shape]).astype(np.float32)
    decode_workers = min(2, cpus)

    def decode_only():
        reader = get_reader('TSM', 'infer', cfg, items=items)
        c = cpu_seconds(resource.RUSAGE_CHILDREN)
        for _ in build_loader(reader, cfg.INFER.batch_size, decode_workers):
            pass
        return cpu_seconds(resource.RUSAGE_CHILDREN) - c  # the workers, once joined

    def model_only(threads):
        def run():
            c = cpu_seconds()
            for _ in items:
                nets[threads].run(clip)
            return cpu_seconds() - c
        return run

    def folder_run(plan):
        return lambda: predict_items(nets[plan.engine_threads], cfg, items, plan, 5)

    grid = {(w, t): Plan(w, t, 1, 'grid') for w in sorted({1, decode_workers})
            for t in sorted({1, cpus})}
    runs = {'decode_only': [], 'model_only': [], 'model_only_1t': [], 'folder': []}
    cpu = {'decode_only': [], 'model_only': [], 'model_only_1t': []}
    grid_runs = {k: [] for k in grid}
    calls = [('decode_only', decode_only), ('model_only', model_only(cpus)),
             ('model_only_1t', model_only(1)),
             ('folder', folder_run(plan_predict(len(items), cfg.INFER)))]
    calls += [(k, folder_run(plan)) for k, plan in grid.items()]
    loads = []
    for r in range(rounds):
        order = calls[r % len(calls):] + calls[:r % len(calls)]  # rotate: drifts hit all
        for key, fn in order:
            t, out = timed(fn)
            if key in runs:
                runs[key].append(t)
                if key in cpu:
                    cpu[key].append(out)
            else:
                grid_runs[key].append(t)
        loads.append(round(os.getloadavg()[0], 2))
        print(f"round {r}: " + ', '.join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()) +
              f", load {loads[-1]}", flush=True)
    n = len(items)
    res['folder_clips'] = n
    res['folder_times_s'] = {k: [round(x, 4) for x in v] for k, v in runs.items()}
    res['folder_cpu_s'] = {k: [round(x, 4) for x in v] for k, v in cpu.items()}
    for k, v in runs.items():
        res[f"{k}_clips_per_s"] = n / statistics.median(v)
    res['folder_vs_bound_rounds'] = [f / max(d, m) for f, d, m in zip(
        runs['folder'], runs['decode_only'], runs['model_only'])]
    res['folder_vs_bound'] = statistics.median(res['folder_vs_bound_rounds'])
    res['folder_vs_cpu_bound_rounds'] = [f / ((dc + mc) / cpus) for f, dc, mc in zip(
        runs['folder'], cpu['decode_only'], cpu['model_only_1t'])]
    res['folder_vs_cpu_bound'] = statistics.median(res['folder_vs_cpu_bound_rounds'])
    res['threads_grid'] = [{'workers': w, 'engine_threads': t,
                            'clips_per_s': n / statistics.median(grid_runs[(w, t)]),
                            'times_s': [round(x, 4) for x in grid_runs[(w, t)]]}
                           for (w, t) in grid]
    res['load_avg_rounds'] = loads
    print(f"folder of {n}: predict.py {res['folder_clips_per_s']:.2f} clips/s, decode only "
          f"{res['decode_only_clips_per_s']:.2f}, model only {res['model_only_clips_per_s']:.2f}"
          f"; folder_vs_bound {res['folder_vs_bound']:.2f}, folder_vs_cpu_bound "
          f"{res['folder_vs_cpu_bound']:.2f}; grid " +
          ', '.join(f"{g['workers']}w/{g['engine_threads']}t {g['clips_per_s']:.2f}"
                    for g in res['threads_grid']), flush=True)


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--reps', type=int, default=9, help='runs of the one-video latency')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds of the folder')
    p.add_argument('--parts', default='one_video,folder', help='comma-separated')
    return p.parse_args(argv)


def measure(args):
    """{'e2e': the figures of the docstring}."""
    reps, rounds = (2, 1) if args.quick else (args.reps, args.rounds)
    tmp = tempfile.TemporaryDirectory(prefix='tsm-bench-e2e-')
    old_cache = os.environ.get('TSM_PADDLE_CACHE')
    os.environ.setdefault('TSM_PADDLE_CACHE', os.path.join(tmp.name, 'cache'))
    try:
        cpus = len(os.sched_getaffinity(0))
        cfg, model, weights, pargs = setup(tmp.name, args.quick)
        from inference.core_plan import plan_predict
        paths, durations, source = common.clips(tmp.name, 3, args.quick)
        single, multi = plan_predict(1, cfg.INFER), plan_predict(len(paths), cfg.INFER)
        nets = {t: engine(model, pargs, cfg, weights, t)
                for t in sorted({1, cpus, single.engine_threads, multi.engine_threads})}
        described = nets[single.engine_threads].describe()
        res = {'quick': args.quick, 'clips': source, 'engine': described.get('engine'),
               'precision': described.get('precision'), 'paddlevideo_ms': PADDLEVIDEO_MS,
               'cpus': cpus, 'plans': {'one_video': single._asdict(), 'folder': multi._asdict()}}
        parts = args.parts.split(',')
        if 'one_video' in parts:
            one_video(res, nets, cfg, paths, durations, source, reps, args.quick)
        if 'folder' in parts:
            folder(res, nets, cfg, paths, rounds)
    finally:
        if old_cache is None:
            os.environ.pop('TSM_PADDLE_CACHE', None)
        tmp.cleanup()
    return {'e2e': res}


def main(argv=None):
    args = parse_args(argv)
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
