"""The shift's cost on every inference engine: TSN against TSM, engine x precision x
formulation, in one run.

    python bench/shift_engines.py [--quick] --out engines.json
        [--engines openvino,onnxruntime,paddle] [--formulations default,conv] [--pairs 30]

Each engine runs in a child process of its own that holds only its TSN and TSM programs,
as a deployment holds one engine.  There, for each precision, the programs run in rounds
TSN X1 TSN X2 ... TSN (common.bracketed): a TSM program's time over the mean of the two TSN
runs either side, median over the rounds; the quartiles of those ratios say how noisy the
machine was.  TSN is the same network with shift_ratio 0.  Every program comes from the
engine's own export (engines/, batch engines.BATCH); formulation 'default' is the engine's
engines.FORMULATION.  ONNX Runtime runs no bf16 (its runner falls back to fp32): it has an
fp32 row only.  shift_overhead_default is the row of the engine `--backend auto` takes for
each precision, in its formulation.

PyTorch eager fp32 (bench/torch_tsm.py, the same weights) runs the same clip on the same
threads in a child process of its own too: median of --pairs runs after a warm-up
(pytorch.tsm_s).  Every row's vs_pytorch is pytorch.tsm_s / the row's tsm_s;
vs_pytorch_default takes the row predict.py runs by default (engines.base.default_precision:
bf16 on AVX512-BF16/AMX CPUs, the engine `auto` takes for it, its formulation).
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import report  # noqa: E402

import numpy as np  # noqa: E402


def sizes(quick):
    """(depth, classes, seg_num, size, pairs)"""
    return (18, 10, 4, 32, 3) if quick else (50, 400, 8, 224, 30)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tsm_and_clip(quick):
    """The TSM every child times (random weights, the same in every process), one clip
    [1, T, 3, S, S] and the eager model's logits on it."""
    import paddle
    paddle.set_device('cpu')
    depth, classes, seg, size, _ = sizes(quick)
    tsm = common.build_tsm(depth, classes, seg, size, 0.125)
    x = np.random.default_rng(0).standard_normal((1, seg, 3, size, size)).astype('float32')
    with paddle.no_grad():
        eager = tsm(paddle.to_tensor(x)).numpy()
    return tsm, x, eager


def measure_engine(name, formulations, quick, threads, pairs):
    """One engine, in this process: export TSN and the TSM formulations, check TSM against
    the eager model (fp32 probabilities), time every precision the engine runs."""
    import engines
    from engines.base import cpu_has_bf16
    eng = engines.engine(name)
    depth, classes, seg, size, default_pairs = sizes(quick)
    pairs = pairs or default_pairs
    forms = [engines.FORMULATION[name] if f == 'default' else f for f in formulations]
    forms = list(dict.fromkeys(forms))  # 'default' may name one given as well
    batch = engines.BATCH[name]
    shape = [seg, 3, size, size]
    tsm, x, eager = tsm_and_clip(quick)
    tsn = common.build_tsm(depth, classes, seg, size, 0.0)
    tmp = tempfile.mkdtemp(prefix='tsm_engines_')
    artifacts, export_s = {}, {}
    for key, model, form in [('tsn', tsn, forms[0])] + [(f, tsm, f) for f in forms]:
        t = time.perf_counter()
        os.makedirs(os.path.join(tmp, key))
        artifacts[key] = eng.export(model, os.path.join(tmp, key, 'model'), shape, form, batch)
        export_s[key] = round(time.perf_counter() - t, 1)
    result = {'engine': name, 'versions': eng.versions(), 'batch': batch, 'threads': threads,
              'formulations': forms, 'chosen': engines.FORMULATION[name], 'pairs': pairs,
              'export_s': export_s, 'probs_max_abs_diff': {}}
    precisions = ['fp32'] + (['bf16'] if cpu_has_bf16() else [])
    for precision in precisions:
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
                    np.abs(softmax(out) - softmax(eager)).max())
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
    import torch_tsm
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


def run(args):
    """The parent: every engine in a child process (this script with --child), then the
    table and the default engine's figures; -> the result dict."""
    import engines
    from engines.base import default_precision
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.engines:
        names = [n for n in args.engines.split(',') if not engines.missing(n)]
    elif args.quick:  # the code path, not the table: the engines `auto` takes
        names = list(dict.fromkeys(engines.choose('auto', p) for p in ('fp32', 'bf16')))
    else:
        names = [n for n in engines.MODULES if not engines.missing(n)]
    flags = ['--threads', str(threads), '--formulations', args.formulations,
             '--pairs', str(args.pairs)] + (['--quick'] if args.quick else [])
    per_engine = {}
    for name in names:
        t = time.perf_counter()
        per_engine[name] = common.run_script('shift_engines', flags + ['--child', name],
                                             timeout=1200 if args.quick else 7200)
        per_engine[name]['wall_s'] = round(time.perf_counter() - t, 1)
    if importlib.util.find_spec('torch') is None:
        torch = {'skipped': 'torch is not installed (pip install -r requirements-convert.txt)'}
    else:
        torch = common.run_script('shift_engines', flags + ['--child', 'pytorch'],
                                  timeout=600 if args.quick else 3600)
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
    default = [r for r in rows if report.default_row(result, r)]
    result['vs_pytorch_default'] = default[0]['vs_pytorch'] if default else None
    return result


def add_args(p):
    p.add_argument('--engines', help='comma-separated (default: every installed engine; '
                                     "--quick: those `--backend auto` takes)")
    p.add_argument('--formulations', default='default',
                   help="comma-separated TSM formulations ('default': each engine's own)")
    p.add_argument('--pairs', type=int, default=0, help='rounds (default 30, --quick 3)')
    return p


def main():
    p = add_args(common.base_args(__doc__))
    p.add_argument('--child', help=argparse.SUPPRESS)  # the engine this process measures
    args = p.parse_args()
    if args.child == 'pytorch':
        common.set_threads(args.threads)
        data = measure_torch(args.quick, args.threads, args.pairs)
    elif args.child:
        common.set_threads(args.threads)
        data = measure_engine(args.child, args.formulations.split(','), args.quick,
                              args.threads, args.pairs)
    else:
        data = run(args)
    common.write_json(args.out, data)


if __name__ == '__main__':
    main()
