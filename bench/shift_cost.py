"""The cost of the temporal shift: TSM against TSN (the same network with shift_ratio 0),
one clip per call, in five modes.

    python bench/shift_cost.py --mode engines [--quick] [--engines openvino,paddle]
        [--formulations default,conv] [--pairs 30] [--out FILE]
    python bench/shift_cost.py --mode pair|crowded|floor|primitives [--quick] [--out FILE]

engines     the table of engine x precision x formulation: s/clip and shift overhead, each
            engine in a child process of its own holding only its TSN and TSM programs, as a
            deployment holds one engine.  For each precision the programs run in rounds
            TSN X1 TSN X2 ... TSN (common.bracketed): a TSM program's time over the mean of
            the two TSN runs either side, median over the rounds; the quartiles say how
            noisy the machine was.  Every program comes from the engine's own export
            (engines/, batch engines.BATCH); formulation 'default' is the engine's
            engines.FORMULATION.  ONNX Runtime runs no bf16 (its runner falls back to
            fp32): an fp32 row only.  shift_overhead_default is the row of the engine
            `--backend auto` takes for each precision.  PyTorch eager fp32 (bench/torch_tsm.py,
            the same weights) runs the same clip on the same threads in a child of its own:
            median of --pairs runs after a warm-up (pytorch.tsm_s); every row's vs_pytorch
            is pytorch.tsm_s / the row's tsm_s, vs_pytorch_default that of the row
            predict.py runs by default (engines.base.default_precision, the engine `auto`
            takes for it, its formulation).
pair        Paddle Inference's TSN and TSM (split) programs alone in this process, in
            back-to-back pairs (common.paired_ratio, which the machine's drifts in speed
            disturb least): shift_overhead_exported; overhead_breakdown splits it into
            'layout' (the split program with its frame moves left out against TSN: more
            convolutions, residual-sum copies, more ops to dispatch) and 'moves' (the real
            split program against that one); then PyTorch's TSM against the same program
            (vs_pytorch).
crowded     every Paddle Inference formulation (split, split with a dynamic batch, conv,
            slice, fused), the eager models, PyTorch, ONNX Runtime and bf16 in one process,
            every program once per round (ratios: the median over rounds of the ratio
            within a round), the headline ratios again from paired runs; the FLOPs, the
            share of a matmul's GFLOP/s, the exported program against the eager one, bf16's
            agreement with fp32 on the real clips.
floor       OpenVINO only: what the shift can cost at least on the default engine.
            tsn (the TSM with its shifts off), split (the default export), no_moves (the
            split export with every frame move left out, common.export_split_without_moves:
            wrong outputs; against tsn, what the split layout alone costs), extension (tsn
            with a TemporalShift custom op, openvino.Op evaluated in numpy, before the
            first convolution of each block; its outputs equal the eager TSM's).
            overhead[name] = ratio - 1 with quartiles (common.bracketed), and per_node_ms:
            OpenVINO's own per-node times (PERF_COUNT, minimum over runs, summed by node
            type) for tsn, split and extension: the extension runs as a 'Reference' node in
            f32 and plain layout, so reorders surround it.
primitives  the exported TSN and TSM programs (split, conv, split without its moves) run
            interleaved in a child process with ONEDNN_VERBOSE=1, which logs every oneDNN
            primitive's time; a program's cost is the sum over its primitives of each one's
            minimum over the rounds, by kind (convolution, reorder, concat, ...).  It
            leaves out Paddle's per-op dispatch; a breakdown, not a steadier figure.

Predictors come from the engines' own load (engines.paddle_engine.create_predictor has
glibc keep the memory a run frees, process-wide, PyTorch's runs included).  Sizes: ResNet-50
TSM, 8 frames at 224, 400 classes (--quick: ResNet-18, 4 frames at 32 px, 10 classes).
"""
import argparse
import collections
import copy
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from testing.models import build_tsm  # noqa: E402

import numpy as np  # noqa: E402

MODES = ('engines', 'pair', 'crowded', 'floor', 'primitives')
MARK = '=====RUN '  # the primitives child's line before each run


def sizes(quick):
    """(depth, classes, seg_num, size, pairs)"""
    return (18, 10, 4, 32, 3) if quick else (50, 400, 8, 224, 30)


def tsm_and_clip(quick):
    """The TSM every mode times (random weights, the same in every process), one clip
    [1, T, 3, S, S] and the eager model's logits on it."""
    import paddle
    paddle.set_device('cpu')
    depth, classes, seg, size, _ = sizes(quick)
    tsm = build_tsm(depth, classes, seg, size, 0.125)
    x = np.random.default_rng(0).standard_normal((1, seg, 3, size, size)).astype('float32')
    with paddle.no_grad():
        eager = tsm(paddle.to_tensor(x)).numpy()
    return tsm, x, eager


def paddle_engine():
    import engines
    return engines.engine('paddle')


# ---- engines: every engine, TSN against TSM ----

def measure_engine(name, formulations, quick, threads, pairs):
    """One engine, in this process: export TSN and the TSM formulations, check TSM against
    the eager model (fp32 probabilities), time every precision the engine runs."""
    import engines
    eng = engines.engine(name)
    depth, classes, seg, size, default_pairs = sizes(quick)
    pairs = pairs or default_pairs
    forms = [engines.FORMULATION[name] if f == 'default' else f for f in formulations]
    forms = list(dict.fromkeys(forms))  # 'default' may name one given as well
    batch = engines.BATCH[name]
    shape = [seg, 3, size, size]
    tsm, x, eager = tsm_and_clip(quick)
    tsn = build_tsm(depth, classes, seg, size, 0.0)
    tmp = tempfile.mkdtemp(prefix='tsm_engines_')
    artifacts, export_s = {}, {}
    for key, model, form in [('tsn', tsn, forms[0])] + [(f, tsm, f) for f in forms]:
        t = time.perf_counter()
        os.makedirs(os.path.join(tmp, key))
        artifacts[key] = common.export(eng, model, os.path.join(tmp, key, 'model'), shape,
                                       form, batch)
        export_s[key] = round(time.perf_counter() - t, 1)
    result = {'engine': name, 'versions': eng.versions(), 'batch': batch, 'threads': threads,
              'formulations': forms, 'chosen': engines.FORMULATION[name], 'pairs': pairs,
              'export_s': export_s, 'probs_max_abs_diff': {}}
    for precision in common.precisions(quick):
        runners = {k: eng.load(a, threads=threads, precision=precision, batch=batch)
                   for k, a in artifacts.items()}
        if runners['tsn'].describe()['precision'] != precision:
            continue  # the engine ran another precision (ONNX Runtime's bf16 is fp32)
        fns = {k: (lambda r=r: r.run(x)) for k, r in runners.items()}
        for k, fn in fns.items():  # warm-up; fp32: the export against the eager model
            out = fn()
            fn()
            if precision == 'fp32' and k != 'tsn':
                result['probs_max_abs_diff'][k] = float(
                    np.abs(common.softmax(out) - common.softmax(eager)).max())
        timed = common.bracketed(fns['tsn'], {f: fns[f] for f in forms}, pairs)
        result[precision] = {
            'tsn_s': round(timed['base']['median_s'], 5),
            'tsm_s': {f: round(timed[f]['median_s'], 5) for f in forms},
            'shift_overhead': {f: timed[f]['ratio'] - 1 for f in forms},
            'ratio_quartiles': {f: [round(timed[f]['q1'], 4), round(timed[f]['q3'], 4)]
                                for f in forms},
            'kernels': runners['tsn'].describe().get('kernels')}  # OpenVINO's: AMX or not
        del runners, fns
    return result


def measure_torch(quick, threads, pairs):
    """PyTorch eager fp32 TSM on the clip the engines run, in this process: median of
    `pairs` runs after a warm-up, and its logits against Paddle's eager model."""
    import torch
    from bench import torch_tsm
    tsm, x, eager = tsm_and_clip(quick)
    call = torch_tsm.warm_call(tsm, x, threads)
    logits = call()
    median, runs = common.interleaved({'tsm': call}, pairs or sizes(quick)[4], warmup=0)
    return {'engine': 'pytorch', 'precision': 'fp32', 'version': torch.__version__,
            'threads': threads, 'tsm_s': round(median['tsm'], 5),
            'runs_s': [round(t, 5) for t in runs['tsm']],
            'logits_max_rel_diff': float(np.abs(logits - eager).max() / np.abs(eager).max())}


def table(engine_results):
    """One row per engine x precision x formulation; 'chosen': the engine's formulation."""
    rows = []
    for r in engine_results.values():
        for precision in ('fp32', 'bf16'):
            if precision not in r:
                continue
            p = r[precision]
            for f in r['formulations']:
                rows.append({'engine': r['engine'], 'precision': precision, 'formulation': f,
                             'chosen': f == r['chosen'], 'tsn_s': p['tsn_s'],
                             'tsm_s': p['tsm_s'][f], 'shift_overhead': p['shift_overhead'][f],
                             'ratio_quartiles': p['ratio_quartiles'][f]})
    return rows


def engine_child(args, name, threads):
    """One engine's (or PyTorch's) measurement: a child process of its own, or this one
    with --quick (a smoke run, where a process start would cost more than the run)."""
    if args.quick:
        common.set_threads(threads)
        if name == 'pytorch':
            return measure_torch(True, threads, args.pairs)
        return measure_engine(name, args.formulations.split(','), True, threads, args.pairs)
    flags = ['--mode', 'engines', '--threads', str(threads), '--formulations',
             args.formulations, '--pairs', str(args.pairs), '--child', name]
    return common.run_script('shift_cost', flags, timeout=3600 if name == 'pytorch' else 7200)


def default_row(run, row):
    """The row predict.py runs by default: the engine `auto` takes at the default
    precision, in its own formulation."""
    precision = run.get('default_precision')
    return (row['chosen'] and row['precision'] == precision
            and (run.get('default_engine') or {}).get(precision) == row['engine'])


def engines_mode(args):
    """The parent: every engine in a child process (this script with --child; --quick: in
    this process), then the table and the default engine's figures; -> the result dict."""
    import engines
    from engines.base import default_precision
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.engines:
        names = [n for n in args.engines.split(',') if not engines.missing(n)]
    elif args.quick:  # the code path, not the table: the engine of the quickest export
        names = ['paddle']
    else:
        names = [n for n in engines.MODULES if not engines.missing(n)]
    per_engine = {}
    for name in names:
        t = time.perf_counter()
        per_engine[name] = engine_child(args, name, threads)
        per_engine[name]['wall_s'] = round(time.perf_counter() - t, 1)
    if importlib.util.find_spec('torch') is None:
        torch = {'skipped': 'torch is not installed (pip install -r requirements-convert.txt)'}
    else:
        torch = engine_child(args, 'pytorch', threads)
    rows = table(per_engine)
    for row in rows:  # both times as the JSON has them, so the ratio can be recomputed
        row['vs_pytorch'] = torch['tsm_s'] / row['tsm_s'] if 'tsm_s' in torch else None
    result = {'threads': threads, 'engines': per_engine, 'pytorch': torch, 'table': rows,
              'default_engine': {}, 'shift_overhead_default': {},
              'default_precision': default_precision()}
    for precision in ('fp32', 'bf16'):
        name = engines.choose('auto', precision)
        result['default_engine'][precision] = name
        row = per_engine.get(name, {}).get(precision, {})
        result['shift_overhead_default'][precision] = row.get('shift_overhead', {}).get(
            per_engine.get(name, {}).get('chosen'))
    default = [r for r in rows if default_row(result, r)]
    result['vs_pytorch_default'] = default[0]['vs_pytorch'] if default else None
    return result


# ---- pair and crowded: Paddle Inference, in one process ----

def conv_flops(model, x):
    """Multiply-adds x2 of every Conv2D and Linear on input x (counted with hooks)."""
    import paddle
    total = [0]

    def conv_hook(layer, inputs, out):
        w = layer.weight.shape
        total[0] += 2 * int(np.prod(out.shape)) * w[1] * w[2] * w[3]

    def fc_hook(layer, inputs, out):
        total[0] += 2 * int(np.prod(out.shape)) * layer.weight.shape[0]

    hooks = [m.register_forward_post_hook(conv_hook if isinstance(m, paddle.nn.Conv2D)
                                          else fc_hook)
             for m in model.sublayers() if isinstance(m, (paddle.nn.Conv2D, paddle.nn.Linear))]
    with paddle.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


def matmul_gflops(n, reps):
    import paddle
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    med, _ = common.interleaved({'mm': lambda: paddle.matmul(a, b).numpy()}, reps)
    return 2 * n ** 3 / med['mm'] / 1e9


def real_clips(seg_num, size, limit=None):
    """Clips of ../shared/realclips (edge cases too) as the test reader makes them:
    [T, 3, S, S] each; [] without them."""
    from reader.sampling import eval_clip_indices
    from reader.transforms import eval_transform, normalize
    from reader.video_backends import VideoDecodeError, open_video
    clips = []
    for row in common.manifest_rows(edge_cases=True)[:limit]:
        try:
            video = open_video(row['path'])
            idx = eval_clip_indices(video.num_frames, seg_num, 1)[0]
            frames = video.get_frames(idx)
        except (VideoDecodeError, Exception):  # edge-case files: skipped, counted
            continue
        frames = eval_transform(frames, size * 256 // 224, size)
        clips.append(normalize(frames, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], seg_num, 1))
    return clips


def crowded_sizes(quick):
    """(depth, classes, seg_num, size, reps, pairs)"""
    return (18, 10, 4, 32, 2, 4) if quick else (50, 400, 8, 224, 15, 25)


def export_variants(tsm, tsn, shape, tmp, threads, quick, x, eager):
    """Every Paddle Inference program of the crowded run, exported and loaded ->
    (runners, export seconds, their logits against the eager model's)."""
    eng = paddle_engine()
    # name: (model, formulation, batch); tsm_split is what eval.py runs; with no shift
    # 'slice' is the plain network (Paddle Inference folds its BN itself)
    variants = {
        'tsn': (tsn, 'slice', 1), 'tsm_split': (tsm, 'split', 1),
        'tsm_split_dynamic_batch': (tsm, 'split', None), 'tsm_conv': (tsm, 'conv', 1),
        'tsm_slice': (tsm, 'slice', None), 'tsm_fused': (tsm, 'fused', None)}
    if quick:  # the code paths, not the table
        for name in ('tsm_split_dynamic_batch', 'tsm_conv', 'tsm_slice', 'tsm_fused'):
            del variants[name]
    runners, export_s, diffs = {}, {}, {}
    for name, (model, form, batch) in variants.items():
        t = time.perf_counter()
        prefix = common.export(eng, model, os.path.join(tmp, name, 'model'), shape, form, batch)
        runners[name] = eng.load(prefix, threads, 'fp32', batch)
        out = runners[name].run(x)
        export_s[name] = round(time.perf_counter() - t, 2)
        if name != 'tsn':
            diffs[name] = {'logits_max_abs': float(np.abs(out - eager).max()),
                           'probs_max_abs': float(np.abs(common.softmax(out)
                                                         - common.softmax(eager)).max())}
    return runners, export_s, diffs


def add_torch(fns, result, tsm, tsn, x, eager, threads):
    """PyTorch eager, same weights, into `fns` (torch is optional)."""
    try:
        import torch
        from bench import torch_tsm
    except ImportError:
        result['torch_version'] = None
        return
    torch.set_num_threads(threads)
    t_tsm, t_tsn = torch_tsm.TorchTSM(tsm), torch_tsm.TorchTSM(tsn)
    tout = torch_tsm.outputs(t_tsm, x)
    result['torch_max_rel_diff'] = float(np.abs(tout - eager).max() / np.abs(eager).max())
    result['torch_version'] = torch.__version__
    fns['torch_tsm'] = lambda: torch_tsm.outputs(t_tsm, x)
    fns['torch_tsn'] = lambda: torch_tsm.outputs(t_tsn, x)


def add_onnx(fns, result, tsm, shape, tmp, threads, x, eager, quick):
    """ONNX Runtime on the engine's own export (engines/ort_engine.py), into `fns`."""
    if quick:
        result['onnx'] = {'error': 'ImportError: skipped with --quick (tests/test_engines.py '
                                   'checks ONNX)'}
        return
    try:
        import engines
        eng = engines.engine('onnxruntime')
        onnx_file = eng.export(tsm, os.path.join(tmp, 'onnx', 'model'), shape, 'split', None)
        runner = eng.load(onnx_file, threads, 'fp32', None)
        oout = runner.run(x)
        result['onnx'] = {
            'probs_max_abs_diff': float(np.abs(common.softmax(oout)
                                               - common.softmax(eager)).max()),
            'top5_equal': bool((np.argsort(-oout, 1)[:, :5]
                                == np.argsort(-eager, 1)[:, :5]).all()),
            'onnxruntime': eng.versions().get('onnxruntime')}
        fns['onnx_tsm'] = lambda: runner.run(x)
    except Exception as e:  # not installed, or a conversion this Paddle cannot do
        result['onnx'] = {'error': f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


def add_bf16(fns, runners, threads, x, quick):
    """The TSN and TSM split programs in bf16, on CPUs that have it (not with --quick);
    -> whether they ran."""
    if 'bf16' not in common.precisions(quick):
        return False
    eng = paddle_engine()
    for name in ('tsm_split', 'tsn'):
        runners[name + '_bf16'] = eng.load(runners[name].prefix, threads, 'bf16', 1)
        fns[name + '_bf16'] = lambda r=runners[name + '_bf16']: r.run(x)
    return True


def crowded_ratios(result, fns, med, raw, cpu, pairs):
    """The crowded run's ratios from its rounds (and the headline ones paired), into result."""
    rounds = len(raw['tsn'])

    def ratio(a, b):
        return float(np.median([raw[a][i] / raw[b][i] for i in range(rounds)]))

    result['rounds'] = rounds
    result['times_s'] = {k: round(v, 5) for k, v in med.items()}
    result['times_raw_s'] = {k: [round(t, 5) for t in v] for k, v in raw.items()}
    result['cpu_times_s'] = {k: round(v, 5) for k, v in cpu.items()}
    result['paired_rounds'] = pairs
    result['shift_overhead_exported'] = common.paired_ratio(fns['tsm_split'], fns['tsn'],
                                                            pairs)[0] - 1
    result['shift_overhead_exported_interleaved'] = ratio('tsm_split', 'tsn') - 1
    result['shift_overhead_exported_by_formulation'] = {
        k[4:]: ratio(k, 'tsn') - 1 for k in med if k.startswith('tsm_') and 'bf16' not in k}
    result['shift_overhead_exported_cpu_time'] = {
        k[4:]: cpu[k] / cpu['tsn'] - 1 for k in cpu if k.startswith('tsm_') and 'bf16' not in k}
    result['shift_overhead_eager'] = ratio('eager_tsm', 'eager_tsn') - 1
    result['inference_speedup'] = ratio('eager_tsm', 'tsm_split')
    torch = 'torch_tsm' in med
    result['vs_pytorch'] = (common.paired_ratio(fns['torch_tsm'], fns['tsm_split'], pairs)[0]
                            if torch else None)
    result['vs_pytorch_interleaved'] = ratio('torch_tsm', 'tsm_split') if torch else None
    result['vs_pytorch_tsn'] = ratio('torch_tsn', 'tsn') if 'torch_tsn' in med else None
    if 'onnx_tsm' in med:
        result['onnx']['time_s'] = med['onnx_tsm']
        result['onnx']['time_vs_paddle_inference'] = ratio('onnx_tsm', 'tsm_split')
    if 'tsn_bf16' in med:
        result['bf16_speedup'] = {'tsm': ratio('tsm_split', 'tsm_split_bf16'),
                                  'tsn': ratio('tsn', 'tsn_bf16')}
        result['shift_overhead_exported_bf16'] = ratio('tsm_split_bf16', 'tsn_bf16') - 1
        if torch:
            result['vs_pytorch_bf16'] = ratio('torch_tsm', 'tsm_split_bf16')


def crowded(args, threads):
    """Every program in one process (the docstring's 'crowded'); -> the result dict."""
    import paddle
    depth, classes, seg, size, reps, pairs = crowded_sizes(args.quick)
    tsm = build_tsm(depth, classes, seg, size, 0.125)
    tsn = build_tsm(depth, classes, seg, size, 0.0)
    x = np.random.default_rng(0).standard_normal((1, seg, 3, size, size)).astype('float32')
    xt = paddle.to_tensor(x)
    with paddle.no_grad():
        eager = tsm(xt).numpy()
    tmp, shape = tempfile.mkdtemp(prefix='tsm_bench_'), [seg, 3, size, size]
    runners, export_s, diffs = export_variants(tsm, tsn, shape, tmp, threads, args.quick, x,
                                               eager)
    result = {'threads': threads, 'depth': depth, 'seg_num': seg, 'size': size,
              'num_classes': classes, 'export_s': export_s, 'export_diffs': diffs,
              'export_max_abs_diff': diffs['tsm_split']['probs_max_abs'],
              'export_max_rel_diff_logits': (diffs['tsm_split']['logits_max_abs']
                                             / float(np.abs(eager).max())),
              'eager_logit_scale': float(np.abs(eager).max())}
    fns = {k: (lambda r=r: r.run(x)) for k, r in runners.items()}
    with paddle.no_grad():
        fns['eager_tsm'] = lambda: tsm(xt).numpy()
        fns['eager_tsn'] = lambda: tsn(xt).numpy()
    add_torch(fns, result, tsm, tsn, x, eager, threads)
    add_onnx(fns, result, tsm, shape, tmp, threads, x, eager, args.quick)
    bf16 = add_bf16(fns, runners, threads, x, args.quick)
    # every variant in every round; a ratio is the median over rounds of the ratio within
    # a round, which load from other processes (it comes and goes) disturbs least
    cpu = {}
    med, raw = common.interleaved(fns, reps, cpu=cpu)
    crowded_ratios(result, fns, med, raw, cpu, pairs)
    flops = conv_flops(tsm, xt)
    mm = matmul_gflops(256 if args.quick else 2048, reps)
    result.update(model_gflops_per_clip=flops / 1e9, matmul_gflops=mm,
                  inference_gflops=flops / med['tsm_split'] / 1e9)
    result['matmul_peak_fraction'] = result['inference_gflops'] / mm
    if threads > 1 and not args.quick:
        result['eager_thread_speedup'] = eager_thread_speedup(tsm, xt, threads)
    result['bf16'] = (bf16_report(runners, seg, size, args.quick) if bf16
                      else {'skipped': 'this CPU has no AVX512-BF16/AMX, or --quick'})
    return result


def eager_thread_speedup(tsm, xt, threads):
    """Eager threads, 1 vs all, alternating (tests/test_threads.py: the threads do work)."""
    import paddle

    def eager_with(n):
        common.set_threads(n)
        with paddle.no_grad():
            tsm(xt).numpy()
    _, traw = common.interleaved({1: lambda: eager_with(1),
                                  threads: lambda: eager_with(threads)}, 5)
    common.set_threads(threads)
    return float(np.median([a / b for a, b in zip(traw[1], traw[threads])]))


def pair(args, threads):
    """TSN and TSM alone in this process (the docstring's 'pair'); -> the result dict."""
    depth, classes, seg, size, _, pairs = crowded_sizes(args.quick)
    tsm = build_tsm(depth, classes, seg, size, 0.125)
    tsn = build_tsm(depth, classes, seg, size, 0.0)
    x = np.random.default_rng(0).standard_normal((1, seg, 3, size, size)).astype('float32')
    tmp, shape, eng = tempfile.mkdtemp(prefix='tsm_bench_'), [seg, 3, size, size], paddle_engine()
    run = {}
    for name, model, form in (('tsn', tsn, 'slice'), ('tsm_split', tsm, 'split')):
        runner = eng.load(common.export(eng, model, os.path.join(tmp, name, 'model'), shape,
                                        form, 1),
                          threads, 'fp32', 1)
        runner.run(x)  # warm-up
        run[name] = lambda r=runner: r.run(x)
    med, ratios = common.paired_ratio(run['tsm_split'], run['tsn'], pairs)
    result = {'threads': threads, 'pairs': pairs, 'shift_overhead_exported': med - 1,
              'ratios': [round(r, 4) for r in ratios], 'vs_pytorch': None,
              'times_s': common.interleaved(run, 5, warmup=0)[0]}
    # where the overhead goes: the split layout with the frame moves left out (timing only)
    layout = eng.load(common.export_split_without_moves(
        tsm, os.path.join(tmp, 'tsm_split_without_moves', 'model'), shape), threads, 'fp32', 1)
    layout.run(x)  # warm-up
    med_layout, _ = common.paired_ratio(lambda: layout.run(x), run['tsn'], pairs)
    med_moves, _ = common.paired_ratio(run['tsm_split'], lambda: layout.run(x), pairs)
    result['overhead_breakdown'] = {'layout': med_layout - 1, 'moves': med_moves - 1}
    del layout
    try:  # then PyTorch eager, same weights, against the same TSM program
        from bench import torch_tsm
        run['torch_tsm'] = torch_tsm.warm_call(tsm, x, threads)
        med, ratios = common.paired_ratio(run['torch_tsm'], run['tsm_split'], pairs)
        result.update(vs_pytorch=med, vs_pytorch_ratios=[round(r, 4) for r in ratios])
        result['times_s']['torch_tsm'] = common.interleaved(
            {'torch_tsm': run['torch_tsm']}, 5, warmup=0)[0]['torch_tsm']
    except ImportError:
        pass
    return result


def bf16_report(runners, seg, size, quick):
    rep = {'weights': 'random init, BN statistics calibrated on one random clip '
                      '(no trained weights offline): agreement of the argmax of this network, '
                      'not of a trained classifier'}
    clips = real_clips(seg, size, limit=4 if quick else None)
    if not clips:
        rep['top1_agreement'] = None
        rep['clips'] = 0
        return rep
    fp, bf = [], []
    for c in clips:
        fp.append(runners['tsm_split'].run(c[None])[0])
        bf.append(runners['tsm_split_bf16'].run(c[None])[0])
    fp, bf = np.stack(fp), np.stack(bf)
    rep['clips'] = len(clips)
    rep['top1_agreement'] = float((fp.argmax(1) == bf.argmax(1)).mean())
    rep['top5_overlap'] = float(np.mean([len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
                                         for a, b in zip(fp, bf)]))
    rep['probs_max_abs_diff'] = float(np.abs(common.softmax(fp) - common.softmax(bf)).max())
    return rep


# ---- floor: OpenVINO, the split layout and an engine extension ----

def shift_op_class():
    """The temporal shift (the 'paddle' direction of models/temporal_shift.py, one clip
    [T, C, H, W]) as an OpenVINO custom op."""
    from openvino import Op

    class TemporalShift(Op):
        def __init__(self, inputs=None, shift_ratio=0.125):
            super().__init__(self, inputs)
            self.shift_ratio = shift_ratio
            self.constructor_validate_and_infer_types()

        def validate_and_infer_types(self):
            self.set_output_type(0, self.get_input_element_type(0),
                                 self.get_input_partial_shape(0))

        def clone_with_new_inputs(self, new_inputs):
            return TemporalShift(new_inputs, self.shift_ratio)

        def visit_attributes(self, visitor):
            return True

        def has_evaluate(self):
            return True

        def evaluate(self, outputs, inputs):
            x, y = inputs[0].data, outputs[0].data  # [T, C, H, W] each
            c1, c2 = int(x.shape[1] * self.shift_ratio), int(x.shape[1] * 2 * self.shift_ratio)
            y[...] = x
            y[1:, :c1], y[:1, :c1] = x[:-1, :c1], 0  # from frame t-1
            y[:-1, c1:c2], y[-1:, c1:c2] = x[1:, c1:c2], 0  # from frame t+1
            return True

    return TemporalShift


def first_convolutions(model):
    """The convolution that opens each block of an exported TSN: a Convolution whose
    input also feeds another consumer (the shortcut) and whose output reaches another
    Convolution through bias Adds and Relus only (the shortcut's reaches the residual sum)."""
    def reaches_conv(node):
        for _ in range(4):
            outs = [t.get_node() for t in node.output(0).get_target_inputs()]
            if len(outs) != 1:
                return False
            node = outs[0]
            kind = node.get_type_name()
            if kind == 'Convolution':
                return True
            consts = [i.get_source_output().get_node().get_type_name() == 'Constant'
                      for i in node.inputs()]
            if not (kind == 'Relu' or (kind == 'Add' and any(consts))):
                return False
        return False

    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != 'Convolution':
            continue
        shared = len(op.input(0).get_source_output().get_target_inputs()) > 1
        if shared and reaches_conv(op):
            found.append(op)
    return found


def with_extension(xml, shift_ratio):
    """The TSN IR at `xml` with a TemporalShift before each block's first convolution."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    shift = shift_op_class()
    convs = first_convolutions(model)
    for conv in convs:
        conv.input(0).replace_source_output(
            shift([conv.input(0).get_source_output()], shift_ratio).output(0))
    return model, len(convs)


def per_node_ms(request, x, runs):
    """{node type: summed minimum ms over `runs`} from OpenVINO's own counters."""
    best = {}
    for _ in range(runs):
        request.infer({0: x})
        for p in request.get_profiling_info():
            key = (p.node_name, p.node_type)
            best[key] = min(best.get(key, 1e9), p.real_time.total_seconds() * 1e3)
    total = collections.defaultdict(float)
    for (_, kind), ms in best.items():
        total[kind] += ms
    return {k: round(v, 3) for k, v in sorted(total.items(), key=lambda kv: -kv[1]) if v > 0}


# ---- primitives: oneDNN primitive time, in a child process ----

def primitives_child(prefixes, names, shape, rounds, threads):
    """Run each exported program `rounds` times, interleaved, a marker line before each."""
    eng = paddle_engine()
    runners = [eng.load(p, threads, 'fp32', 1) for p in prefixes]
    x = np.random.default_rng(0).standard_normal([1, *shape]).astype('float32')
    for r in runners:  # warm-up: primitives created, weights reordered
        r.run(x)
        r.run(x)
    for _ in range(rounds):
        for name, r in zip(names, runners):
            print(MARK + name, flush=True)
            r.run(x)


def parse(lines):
    """oneDNN verbose lines -> {program: {'total_ms': sum of per-primitive minima,
    'by_kind': {kind: ms}, 'primitives': count}}."""
    runs, cur = collections.defaultdict(list), None
    for ln in lines:
        if ln.startswith(MARK):
            cur = []
            runs[ln[len(MARK):].strip()].append(cur)
        elif cur is not None and ',exec,' in ln:
            f = ln.strip().split(',')
            cur.append((f[5], float(f[-1])))  # primitive kind, milliseconds
    out = {}
    for name, rr in runs.items():
        n = min(len(r) for r in rr)
        by_kind = collections.Counter()
        for i in range(n):
            by_kind[rr[0][i][0]] += min(r[i][1] for r in rr)
        out[name] = {'total_ms': round(sum(by_kind.values()), 3), 'primitives': n,
                     'rounds': len(rr), 'by_kind': {k: round(v, 3) for k, v in by_kind.items()}}
    return out


def floor_exports(tsm, shape, form, tmp):
    """The tsn, split and no_moves OpenVINO IRs of the floor mode -> {name: xml}."""
    from engines import openvino_engine as eng
    tsn = copy.deepcopy(tsm)  # the same weights, the shifts off
    tsn.backbone.set_shift(0.0, tsm.backbone.shift_direction, tsm.backbone.shift_place)
    tsn.build_key = None  # not the network build_tsm made: not shared
    xml = {k: os.path.join(tmp, k, 'model') for k in ('tsn', 'split', 'no_moves')}
    for k in xml:
        os.makedirs(os.path.dirname(xml[k]))
    xml['tsn'] = eng.export(tsn, xml['tsn'], shape, form, 1)
    xml['split'] = common.export(eng, tsm, xml['split'], shape, form, 1)
    xml['no_moves'] = common.export_split_without_moves(tsm, xml['no_moves'], shape,
                                                        export=eng.export)
    return xml


def floor_precision(core, xml, config, x, eager, pairs, result):
    """One precision of the floor mode: the four programs bracketed against tsn, then
    OpenVINO's per-node times -> that precision's figures (fp32: the outputs checked)."""
    models = {k: core.read_model(v) for k, v in xml.items()}
    models['extension'], result['extension_ops'] = with_extension(xml['tsn'], 0.125)
    requests = {k: core.compile_model(m, 'CPU', config).create_infer_request()
                for k, m in models.items()}
    for r in requests.values():  # warm-up
        r.infer({0: x})
        r.infer({0: x})
    if config['INFERENCE_PRECISION_HINT'] == 'f32':
        for k in ('split', 'extension'):
            out = np.array(requests[k].infer({0: x})[0])
            key = 'ext' if k == 'extension' else k
            result[f'{key}_probs_max_abs_diff'] = float(
                np.abs(common.softmax(out) - common.softmax(eager)).max())
    fns = {k: (lambda r=r: r.infer({0: x})) for k, r in requests.items()}
    others = [k for k in fns if k != 'tsn']
    timed = common.bracketed(fns['tsn'], {k: fns[k] for k in others}, pairs)
    per = {'tsn_s': round(timed['base']['median_s'], 5),
           'overhead': {k: timed[k]['ratio'] - 1 for k in others},
           'quartiles': {k: [round(timed[k]['q1'] - 1, 4), round(timed[k]['q3'] - 1, 4)]
                         for k in others},
           'median_s': {k: round(timed[k]['median_s'], 5) for k in others}, 'per_node_ms': {}}
    for k in ('tsn', 'split', 'extension'):
        req = core.compile_model(models[k], 'CPU', {**config, 'PERF_COUNT': True}) \
            .create_infer_request()
        req.infer({0: x})
        per['per_node_ms'][k] = per_node_ms(req, x, max(3, pairs // 5))
    return per


def floor(args, threads):
    """OpenVINO's shift floor (the docstring's 'floor'); -> the result dict."""
    import openvino as ov
    import engines
    from engines import openvino_engine as eng
    depth, _, seg, size, pairs = sizes(args.quick)
    pairs = args.pairs or pairs
    tsm, x, eager = tsm_and_clip(args.quick)  # the TSM and clip the engines table times
    shape, form = [seg, 3, size, size], engines.FORMULATION['openvino']
    xml = floor_exports(tsm, shape, form, tempfile.mkdtemp(prefix='tsm_shift_floor_'))
    core = ov.Core()
    result = {'threads': threads, 'pairs': pairs, 'openvino': ov.__version__, 'depth': depth,
              'formulation': form}
    for precision in common.precisions(args.quick):
        config = {'INFERENCE_PRECISION_HINT': eng.HINTS[precision],
                  'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY',
                  'NUM_STREAMS': 1}
        per = floor_precision(core, xml, config, x, eager, pairs, result)
        result[precision] = per
        for k in ('no_moves', 'extension'):
            result.setdefault(f'overhead_{k}', {})[precision] = per['overhead'][k]
        print(f"{precision}: TSN {per['tsn_s']:.4f} s; " + ', '.join(
            f"{k} {v:+.3f}" for k, v in per['overhead'].items()), flush=True)
    return result


def primitives(args, threads):
    """oneDNN primitive time by kind (the docstring's 'primitives'); -> the result dict."""
    depth, classes, seg, size, _ = sizes(args.quick)
    classes = classes if args.quick else 400  # --quick: the other modes' networks, shared
    rounds = 3 if args.quick else 8
    shape, eng = [seg, 3, size, size], paddle_engine()
    tmp = tempfile.mkdtemp(prefix='tsm_primitives_')
    programs = {'tsn': (0.0, 'slice'), 'tsm_split': (0.125, 'split'), 'tsm_conv': (0.125, 'conv')}
    pairs = []
    for name, (ratio, form) in programs.items():
        model = build_tsm(depth, classes, seg, size, ratio)
        pairs += [name, common.export(eng, model, os.path.join(tmp, name, 'model'), shape,
                                      form, 1)]
    # the split layout without its frame moves (timing only): what the layout itself costs;
    # `model` is the last one built above, a TSM
    name = 'tsm_split_without_moves'
    pairs += [name, common.export_split_without_moves(model, os.path.join(tmp, name, 'model'),
                                                      shape)]
    env = dict(os.environ, ONEDNN_VERBOSE='1', GLOG_minloglevel='3')
    cmd = [sys.executable, os.path.abspath(__file__), '--mode', 'primitives', '--out',
           os.devnull, '--threads', str(threads), '--child', *pairs] + \
        (['--quick'] if args.quick else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.ROOT)
    if res.returncode != 0:
        raise SystemExit(f"child failed ({res.returncode}):\n{res.stderr[-3000:]}")
    costs = parse(res.stdout.splitlines())
    base = costs['tsn']['total_ms']
    return {'threads': threads, 'depth': depth, 'seg_num': seg, 'size': size,
            'rounds': rounds, 'programs': costs,
            'shift_overhead_primitives': {k[4:]: costs[k]['total_ms'] / base - 1
                                          for k in costs if k.startswith('tsm_')}}


# ---- the command line ----

def child(args, threads):
    """A child process of the engines or primitives mode: what its parent asked for."""
    common.set_threads(threads)
    if args.mode == 'primitives':
        names, prefixes = args.child[0::2], args.child[1::2]
        depth, _, seg, size, _ = sizes(args.quick)
        return primitives_child(prefixes, names, [seg, 3, size, size],
                                3 if args.quick else 8, threads)
    name = args.child[0]
    if name == 'pytorch':
        return measure_torch(args.quick, threads, args.pairs)
    return measure_engine(name, args.formulations.split(','), args.quick, threads, args.pairs)


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--mode', choices=MODES, required=True)
    p.add_argument('--engines', help="engines: comma-separated (default: every installed "
                                     "engine; --quick: paddle)")
    p.add_argument('--formulations', default='default',
                   help="engines: comma-separated TSM formulations ('default': each "
                        "engine's own)")
    p.add_argument('--pairs', type=int, default=0,
                   help='engines, floor: rounds (default 30, --quick 3)')
    p.add_argument('--child', nargs='+', help=argparse.SUPPRESS)  # what a child measures
    return p.parse_args(argv)


def measure(args):
    """{args.mode: its figures} (bench/run.py keeps them under the mode's name)."""
    threads = args.threads or len(os.sched_getaffinity(0))
    common.set_threads(threads)
    import paddle
    paddle.set_device('cpu')
    modes = {'engines': lambda: engines_mode(args), 'pair': lambda: pair(args, threads),
             'crowded': lambda: crowded(args, threads), 'floor': lambda: floor(args, threads),
             'primitives': lambda: primitives(args, threads)}
    return {args.mode: modes[args.mode]()}


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        data = child(args, args.threads or len(os.sched_getaffinity(0)))
        if data is not None:
            common.write_json(args.out, data)
        return
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
