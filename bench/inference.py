"""CPU inference: the cost of the shift, Paddle Inference vs eager vs PyTorch vs ONNX
Runtime, float32 vs bfloat16.  One clip per call.  Every program runs once per round
(ratios: the median over rounds of the ratio within a round); the headline ratios
(shift_overhead_exported, vs_pytorch) are measured again from back-to-back pairs
(common.paired_ratio), which this machine's drifts in speed disturb least.
--pair_only: just the TSN and TSM (split) programs, paired, in a process holding nothing
else (no ONNX Runtime, no other predictors); then PyTorch's TSM against the same program.
--engines: the table of engine x precision x {TSN, TSM}, s/clip and shift overhead, each
engine in a process of its own (bench/shift_engines.py; --formulations, --pairs).
It also splits the overhead (overhead_breakdown): 'layout', the split program with its
frame moves left out against TSN (more convolutions, residual-sum copies, more ops to
dispatch), and 'moves', the real split program against that one.
Predictors come from utils.inference.create_predictor, which has glibc keep the memory a
run frees (utils.env.keep_freed_memory): process-wide, so every program here, PyTorch's
too, runs without faulting its activations in again on every run.  (Without it TSN and
PyTorch took more page faults per run than the split program, which flattered the
ratios: 0.09 and 1.63 at the median then, against 0.12-0.16 and 1.35-1.45 with it.)

    python bench/inference.py [--quick] --out inference.json
    python bench/inference.py --engines [--quick] --out engines.json
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402


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
    """Clips of ../shared/realclips as the test reader makes them: [T, 3, S, S] each."""
    manifest = os.path.join(common.REALCLIPS, 'MANIFEST.tsv')
    if not os.path.isfile(manifest):
        return []
    from reader.sampling import eval_clip_indices
    from reader.transforms import eval_transform, normalize
    from reader.video_backends import VideoDecodeError, open_video
    clips = []
    with open(manifest, encoding='utf-8') as f:
        rows = [ln.split('\t')[0] for ln in f.read().splitlines()[1:] if ln.strip()]
    for name in rows[:limit]:
        try:
            video = open_video(os.path.join(common.REALCLIPS, name))
            idx = eval_clip_indices(video.num_frames, seg_num, 1)[0]
            frames = video.get_frames(idx)
        except (VideoDecodeError, Exception):  # edge-case files: skipped, counted
            continue
        frames = eval_transform(frames, size * 256 // 224, size)
        clips.append(normalize(frames, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], seg_num, 1))
    return clips


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def main():
    p = common.base_args(__doc__)
    p.add_argument('--pair_only', action='store_true',
                   help='only shift_overhead_exported, from TSN and TSM alone in this process')
    p.add_argument('--engines', nargs='?', const='', default=None, metavar='NAMES',
                   help='the engine table (bench/shift_engines.py): every installed engine, '
                        'or the comma-separated NAMES')
    p.add_argument('--formulations', default='default', help='with --engines')
    p.add_argument('--pairs', type=int, default=0, help='with --engines')
    args = p.parse_args()
    if args.engines is not None:
        import shift_engines
        args.engines = args.engines or None
        return common.write_json(args.out, shift_engines.run(args))
    threads = args.threads or len(os.sched_getaffinity(0))
    common.set_threads(threads)
    import paddle
    paddle.set_device('cpu')
    from utils.inference import InferenceModel, cpu_has_bf16, export
    if args.quick:
        depth, classes, seg, size, reps = 18, 10, 4, 32, 2
    else:
        depth, classes, seg, size, reps = 50, 400, 8, 224, 15
    tsm = common.build_tsm(depth, classes, seg, size, 0.125)
    tsn = common.build_tsm(depth, classes, seg, size, 0.0)
    x = np.random.default_rng(0).standard_normal((1, seg, 3, size, size)).astype('float32')
    xt = paddle.to_tensor(x)
    with paddle.no_grad():
        eager_logits = tsm(xt).numpy()
    tmp = tempfile.mkdtemp(prefix='tsm_bench_')
    shape = [seg, 3, size, size]
    if args.pair_only:
        return pair_only(tsm, tsn, x, shape, tmp, threads, 4 if args.quick else 25, args.out)
    # name: (model, formulation, batch); tsm_split is what eval.py runs; with no shift
    # 'slice' is the plain network (Paddle Inference folds its BN itself)
    variants = {
        'tsn': (tsn, 'slice', 1), 'tsm_split': (tsm, 'split', 1),
        'tsm_split_dynamic_batch': (tsm, 'split', None), 'tsm_conv': (tsm, 'conv', 1),
        'tsm_slice': (tsm, 'slice', None), 'tsm_fused': (tsm, 'fused', None)}
    if args.quick:  # the code paths, not the table
        for name in ('tsm_split_dynamic_batch', 'tsm_conv', 'tsm_slice', 'tsm_fused'):
            del variants[name]
    runners, result = {}, {'threads': threads, 'depth': depth, 'seg_num': seg, 'size': size,
                           'num_classes': classes}
    diffs = {}
    for name, (model, form, batch) in variants.items():
        t = time.perf_counter()
        prefix = export(model, os.path.join(tmp, name, 'model'), shape, form, batch)
        runners[name] = InferenceModel(prefix, batch, threads)
        out = runners[name].run(x)
        result.setdefault('export_s', {})[name] = round(time.perf_counter() - t, 2)
        if name != 'tsn':
            diffs[name] = {'logits_max_abs': float(np.abs(out - eager_logits).max()),
                           'probs_max_abs': float(np.abs(softmax(out) - softmax(eager_logits)).max())}
    result['export_diffs'] = diffs
    result['export_max_abs_diff'] = diffs['tsm_split']['probs_max_abs']
    result['export_max_rel_diff_logits'] = (diffs['tsm_split']['logits_max_abs']
                                            / float(np.abs(eager_logits).max()))
    result['eager_logit_scale'] = float(np.abs(eager_logits).max())

    fns = {k: (lambda r=r: r.run(x)) for k, r in runners.items()}
    with paddle.no_grad():
        fns['eager_tsm'] = lambda: tsm(xt).numpy()
        fns['eager_tsn'] = lambda: tsn(xt).numpy()

    try:  # PyTorch eager, same weights
        import torch
        import torch_tsm
        torch.set_num_threads(threads)
        t_tsm, t_tsn = torch_tsm.TorchTSM(tsm), torch_tsm.TorchTSM(tsn)
        tout = torch_tsm.outputs(t_tsm, x)
        result['torch_max_rel_diff'] = float(np.abs(tout - eager_logits).max()
                                             / np.abs(eager_logits).max())
        result['torch_version'] = torch.__version__
        fns['torch_tsm'] = lambda: torch_tsm.outputs(t_tsm, x)
        fns['torch_tsn'] = lambda: torch_tsm.outputs(t_tsn, x)
    except ImportError:
        result['torch_version'] = None

    try:  # ONNX Runtime on the paddle2onnx conversion of the exported model
        if args.quick:
            raise ImportError('skipped with --quick (tests/test_inference.py checks ONNX)')
        import onnxruntime as ort
        onnx_file = to_onnx(os.path.join(tmp, 'tsm_split_dynamic_batch', 'model'))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(onnx_file, opts, providers=['CPUExecutionProvider'])
        iname = sess.get_inputs()[0].name
        oout = sess.run(None, {iname: x})[0]
        result['onnx'] = {
            'probs_max_abs_diff': float(np.abs(softmax(oout) - softmax(eager_logits)).max()),
            'top5_equal': bool((np.argsort(-oout, 1)[:, :5] == np.argsort(-eager_logits, 1)[:, :5]).all()),
            'onnxruntime': ort.__version__}
        fns['onnx_tsm'] = lambda: sess.run(None, {iname: x})[0]
    except Exception as e:  # ImportError, or a conversion this Paddle cannot do
        result['onnx'] = {'error': f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}

    bf16 = cpu_has_bf16()
    if bf16:
        runners['tsm_split_bf16'] = InferenceModel(os.path.join(tmp, 'tsm_split', 'model'), 1,
                                                   threads, 'bf16')
        runners['tsn_bf16'] = InferenceModel(os.path.join(tmp, 'tsn', 'model'), 1, threads, 'bf16')
        fns['tsm_split_bf16'] = lambda: runners['tsm_split_bf16'].run(x)
        fns['tsn_bf16'] = lambda: runners['tsn_bf16'].run(x)

    # every variant in every round; a ratio is the median over rounds of the ratio within
    # a round, which load from other processes (it comes and goes) disturbs least
    cpu = {}
    med, raw = common.interleaved(fns, reps, cpu=cpu)
    rounds = len(raw['tsn'])

    def ratio(a, b):
        return float(np.median([raw[a][i] / raw[b][i] for i in range(rounds)]))

    result['rounds'] = rounds
    result['times_s'] = {k: round(v, 5) for k, v in med.items()}
    result['times_raw_s'] = {k: [round(t, 5) for t in v] for k, v in raw.items()}
    result['cpu_times_s'] = {k: round(v, 5) for k, v in cpu.items()}
    # the headline ratios once more, each pair of programs in tight alternation
    pairs = 4 if args.quick else 25
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
    result['vs_pytorch'] = (common.paired_ratio(fns['torch_tsm'], fns['tsm_split'], pairs)[0]
                            if 'torch_tsm' in med else None)
    result['vs_pytorch_interleaved'] = ratio('torch_tsm', 'tsm_split') if 'torch_tsm' in med else None
    result['vs_pytorch_tsn'] = ratio('torch_tsn', 'tsn') if 'torch_tsn' in med else None
    if 'onnx_tsm' in med:
        result['onnx']['time_s'] = med['onnx_tsm']
        result['onnx']['time_vs_paddle_inference'] = ratio('onnx_tsm', 'tsm_split')
    if bf16:
        result['bf16_speedup'] = {'tsm': ratio('tsm_split', 'tsm_split_bf16'),
                                  'tsn': ratio('tsn', 'tsn_bf16')}
        result['shift_overhead_exported_bf16'] = ratio('tsm_split_bf16', 'tsn_bf16') - 1
        if 'torch_tsm' in med:
            result['vs_pytorch_bf16'] = ratio('torch_tsm', 'tsm_split_bf16')
    flops = conv_flops(tsm, xt)
    mm = matmul_gflops(256 if args.quick else 2048, reps)
    result['model_gflops_per_clip'] = flops / 1e9
    result['matmul_gflops'] = mm
    result['inference_gflops'] = flops / med['tsm_split'] / 1e9
    result['matmul_peak_fraction'] = result['inference_gflops'] / mm

    # eager threads, 1 vs all, alternating (tests/test_threads.py: the threads do work)
    if threads > 1 and not args.quick:
        def eager_with(n):
            common.set_threads(n)
            with paddle.no_grad():
                tsm(xt).numpy()
        _, traw = common.interleaved({1: lambda: eager_with(1),
                                      threads: lambda: eager_with(threads)}, 5)
        common.set_threads(threads)
        result['eager_thread_speedup'] = float(np.median(
            [a / b for a, b in zip(traw[1], traw[threads])]))

    if bf16:
        result['bf16'] = bf16_report(runners, med, seg, size, args.quick)
    else:
        result['bf16'] = {'skipped': 'this CPU has no AVX512-BF16/AMX'}
    common.write_json(args.out, result)


def pair_only(tsm, tsn, x, shape, tmp, threads, pairs, out):
    from utils.inference import InferenceModel, export
    run = {}
    for name, model, form in (('tsn', tsn, 'slice'), ('tsm_split', tsm, 'split')):
        runner = InferenceModel(export(model, os.path.join(tmp, name, 'model'), shape, form, 1),
                                1, threads)
        runner.run(x)  # warm-up
        run[name] = lambda r=runner: r.run(x)
    med, ratios = common.paired_ratio(run['tsm_split'], run['tsn'], pairs)
    result = {'threads': threads, 'pairs': pairs, 'shift_overhead_exported': med - 1,
              'ratios': [round(r, 4) for r in ratios], 'vs_pytorch': None,
              'times_s': common.interleaved(run, 5, warmup=0)[0]}
    # where the overhead goes: the split layout with the frame moves left out (timing only)
    layout = InferenceModel(common.export_split_without_moves(
        tsm, os.path.join(tmp, 'tsm_split_without_moves', 'model'), shape), 1, threads)
    layout.run(x)  # warm-up
    med_layout, _ = common.paired_ratio(lambda: layout.run(x), run['tsn'], pairs)
    med_moves, _ = common.paired_ratio(run['tsm_split'], lambda: layout.run(x), pairs)
    result['overhead_breakdown'] = {'layout': med_layout - 1, 'moves': med_moves - 1}
    del layout
    try:  # then PyTorch eager, same weights, against the same TSM program
        import torch_tsm
        run['torch_tsm'] = torch_tsm.warm_call(tsm, x, threads)
        med, ratios = common.paired_ratio(run['torch_tsm'], run['tsm_split'], pairs)
        result.update(vs_pytorch=med, vs_pytorch_ratios=[round(r, 4) for r in ratios])
        result['times_s']['torch_tsm'] = common.interleaved(
            {'torch_tsm': run['torch_tsm']}, 5, warmup=0)[0]['torch_tsm']
    except ImportError:
        pass
    common.write_json(out, result)


def bf16_report(runners, med, seg, size, quick):
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
    rep['probs_max_abs_diff'] = float(np.abs(softmax(fp) - softmax(bf)).max())
    return rep


def to_onnx(prefix):
    """paddle2onnx of an exported model -> .onnx path (onnxoptimizer for the graph pass:
    the default, polygraphy, pip-installs a module when it misses one)."""
    import paddle2onnx
    from utils.inference import program_files
    program, params = program_files(prefix)
    out = prefix + '.onnx'
    paddle2onnx.export(program, params, out, opset_version=13, optimize_tool='onnxoptimizer')
    return out


if __name__ == '__main__':
    main()
