"""Every bench part runs (bench/run.py --quick, in this process, tiny sizes) and writes
its figures, with values that are finite, positive where they must be, and consistent with
the times written beside them (each ratio recomputed here from them, within their
rounding); the FLOP count against ResNet-18's by hand; docs/performance.md is what
bench/report.py renders from the results files; bench/ stays apart from the tests and the
project's module names."""
import ast
import glob
import json
import math
import os
import statistics
import tempfile

import pytest

from tests.conftest import ROOT, run_cli

KEYS = ('shift_overhead_exported', 'shift_overhead_eager', 'vs_pytorch', 'inference_speedup',
        'matmul_peak_fraction', 'export_max_abs_diff', 'reader_floor_ratio',
        'reader_speedup_test', 'reader_worker_scaling', 'pkl_speedup', 'train_step_clips_per_s',
        'train_peak_mem_mb', 'shift_overhead_primitives')


def finite(x):
    return isinstance(x, float) and math.isfinite(x)


def positive(x):
    return finite(x) and x > 0


def rounded(*values, digits):
    """Relative error bound of a product or quotient of `values`, each rounded to
    `digits` decimals."""
    return sum(0.5 * 10 ** -digits / v for v in values)


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b))


def resnet18_flops(size, seg_num, num_classes):
    """2 x multiply-adds of ResNet-18's convolutions on seg_num frames of size x size, plus
    the FC once per clip (the feature_mean head averages the features first); by hand from
    the architecture: stem 7x7/2, max-pool /2, 4 stages of 2 basic blocks."""
    def conv(h, cin, cout, k, s, p):
        out = (h + 2 * p - k) // s + 1
        return out, 2 * out * out * cout * cin * k * k

    h, total = conv(size, 3, 64, 7, 2, 3)
    h, cin = (h + 2 - 3) // 2 + 1, 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            out, first = conv(h, cin, cout, 3, s, 1)
            total += first + conv(out, cout, cout, 3, 1, 1)[1]
            if s != 1 or cin != cout:  # the 1x1 projection of the shortcut
                total += conv(h, cin, cout, 1, s, 0)[1]
            h, cin = out, cout
    return seg_num * total + 2 * 512 * num_classes


def check_inference(d):
    raw, times = d['times_raw_s'], d['times_s']
    for name, runs in raw.items():
        assert len(runs) == d['rounds'] and min(runs) > 0, name
        assert times[name] == pytest.approx(statistics.median(runs), abs=1e-5), name
        assert d['cpu_times_s'][name] > 0, name

    def ratio_from_times(a, b):  # the median over rounds of the ratio within a round
        return pytest.approx(median_ratio(raw[a], raw[b]),
                             rel=rounded(*raw[a], *raw[b], digits=5))

    assert 1 + d['shift_overhead_exported_interleaved'] == ratio_from_times('tsm_split', 'tsn')
    assert d['shift_overhead_exported_by_formulation']['split'] == pytest.approx(
        d['shift_overhead_exported_interleaved'])
    assert 1 + d['shift_overhead_eager'] == ratio_from_times('eager_tsm', 'eager_tsn')
    assert d['inference_speedup'] == ratio_from_times('eager_tsm', 'tsm_split')
    cpu = d['cpu_times_s']
    assert 1 + d['shift_overhead_exported_cpu_time']['split'] == pytest.approx(
        cpu['tsm_split'] / cpu['tsn'], rel=rounded(cpu['tsm_split'], cpu['tsn'], digits=5))
    if 'tsn_bf16' in raw:
        assert d['bf16_speedup']['tsm'] == ratio_from_times('tsm_split', 'tsm_split_bf16')
        assert d['bf16_speedup']['tsn'] == ratio_from_times('tsn', 'tsn_bf16')
        assert 1 + d['shift_overhead_exported_bf16'] == ratio_from_times('tsm_split_bf16',
                                                                         'tsn_bf16')
        if d['bf16']['clips']:
            assert 0 <= d['bf16']['top1_agreement'] <= 1
            assert 0 <= d['bf16']['top5_overlap'] <= 1
    assert finite(d['shift_overhead_exported']) and d['shift_overhead_exported'] > -1
    assert d['paired_rounds'] == 4
    # FLOPs: ResNet-18, 4 frames of 32 px, 10 classes (--quick); GFLOP/s from the median time
    assert (d['depth'], d['seg_num'], d['size'], d['num_classes']) == (18, 4, 32, 10)
    assert d['model_gflops_per_clip'] * 1e9 == pytest.approx(resnet18_flops(32, 4, 10))
    assert d['inference_gflops'] == pytest.approx(
        d['model_gflops_per_clip'] / times['tsm_split'],
        rel=rounded(times['tsm_split'], digits=5))
    assert positive(d['matmul_gflops'])
    assert d['matmul_peak_fraction'] == pytest.approx(d['inference_gflops'] / d['matmul_gflops'])
    # the exported program computes what the eager model does
    diff = d['export_diffs']['tsm_split']
    assert d['export_max_abs_diff'] == diff['probs_max_abs'] < 1e-4
    assert positive(d['eager_logit_scale'])
    assert d['export_max_rel_diff_logits'] == pytest.approx(
        diff['logits_max_abs'] / d['eager_logit_scale'])


def check_pair(d):
    assert len(d['ratios']) == d['pairs'] == 4 and min(d['ratios']) > 0
    # the headline is the median of the pair ratios written beside it (4 decimals)
    assert 1 + d['shift_overhead_exported'] == pytest.approx(statistics.median(d['ratios']),
                                                             abs=1e-4)
    assert min(d['times_s'].values()) > 0 and set(d['times_s']) >= {'tsn', 'tsm_split'}
    assert set(d['overhead_breakdown']) == {'layout', 'moves'}
    assert all(finite(v) and v > -1 for v in d['overhead_breakdown'].values())
    if d['vs_pytorch'] is not None:  # PyTorch is optional
        assert 'torch_tsm' in d['times_s']
        assert d['vs_pytorch'] == pytest.approx(statistics.median(d['vs_pytorch_ratios']),
                                                abs=1e-4)


def check_primitives(d):
    prim = d['programs']  # every program's oneDNN primitives were seen
    assert set(prim) == {'tsn', 'tsm_split', 'tsm_conv', 'tsm_split_without_moves'}
    for name, p in prim.items():
        assert p['rounds'] == d['rounds'] == 3 and p['primitives'] > 0, name
        assert p['total_ms'] > 0 and min(p['by_kind'].values()) >= 0, name
        assert p['total_ms'] == pytest.approx(sum(p['by_kind'].values()),
                                              abs=5e-4 * (len(p['by_kind']) + 1)), name
        assert p['by_kind'].get('convolution', 0) > 0, name
    # TSN has no shift, hence no concat; the split program's moves are concats
    assert 'concat' not in prim['tsn']['by_kind'] and prim['tsm_split']['by_kind']['concat'] > 0
    base = prim['tsn']['total_ms']
    assert set(d['shift_overhead_primitives']) == {'split', 'conv', 'split_without_moves'}
    for form, overhead in d['shift_overhead_primitives'].items():
        total = prim['tsm_' + form]['total_ms']
        assert 1 + overhead == pytest.approx(total / base, rel=rounded(total, base, digits=3))


def check_reader(d):
    totals = ('ffmpeg_cpu_s_total', 'reader_cpu_s_total', 'opencv_all_frames_cpu_s_total',
              'pkl_cpu_s_total', 'frames_cpu_s_total')
    assert all(positive(d[k]) for k in totals), {k: d[k] for k in totals}
    assert d['clips'] == len(d['per_clip']) == 3 and d['source'] == 'generated'
    for column, total in (('reader', 'reader_cpu_s_total'), ('ffmpeg', 'ffmpeg_cpu_s_total'),
                          ('opencv_all', 'opencv_all_frames_cpu_s_total')):
        assert sum(c[column] for c in d['per_clip']) == pytest.approx(
            d[total], abs=5e-5 * d['clips']), column
    reader = d['reader_cpu_s_total']
    assert d['reader_floor_ratio'] == pytest.approx(reader / d['ffmpeg_cpu_s_total'])
    assert d['reader_speedup_test'] == pytest.approx(d['opencv_all_frames_cpu_s_total'] / reader)
    assert d['pkl_speedup'] == pytest.approx(reader / d['pkl_cpu_s_total'])
    assert d['frames_speedup'] == pytest.approx(reader / d['frames_cpu_s_total'])
    assert positive(d['pkl_protocol2_speedup'])
    for key in ('reader_worker_scaling', 'decode_process_scaling'):
        rounds = d[key + '_rounds']
        assert positive(d[key]) and min(rounds) > 0, key
        assert d[key] == pytest.approx(statistics.median(rounds), abs=5e-4), key


def check_train(d):
    for kind in ('tsm', 'tsn'):
        r = d[kind]
        assert positive(r['step_s']) and r['clips_per_s'] == pytest.approx(r['batch'] / r['step_s'])
        assert r['peak_rss_mb'] >= r['rss_before_training_mb'] > 0
        assert d['train_step_clips_per_s'][kind] == r['clips_per_s']
        assert d['train_peak_mem_mb'][kind] == r['peak_rss_mb']


@pytest.fixture(scope='module')
def quick():
    """bench/run.py --quick, every default part in this process (tiny sizes), its process
    settings (threads, environment) restored afterwards; -> (the result, its file)."""
    from bench import common, run
    env = dict(os.environ)
    out = os.path.join(tempfile.mkdtemp(prefix='tsm_test_bench_'), 'quick.json')
    try:
        args = run.parse_args(['--quick', '--out', out])
        common.save(run.measure(args), args)
    finally:
        # Paddle's threads as they were (one unless OMP_NUM_THREADS said otherwise), then
        # the environment: set_threads writes OMP_NUM_THREADS, which every later
        # subprocess would inherit (Paddle then warns on stderr)
        common.set_threads(int(env.get('OMP_NUM_THREADS', 1)))
        os.environ.clear()
        os.environ.update(env)
    with open(out, encoding='utf-8') as f:
        return json.load(f), out


def test_quick_run_writes_every_part_and_its_headlines(quick):
    from bench.run import DEFAULT, HEADLINE
    data, _ = quick
    heads = data['headlines']
    assert set(DEFAULT) <= set(data), set(DEFAULT) - set(data)
    missing = [k for k in KEYS if k not in heads]
    assert not missing, missing
    for k in KEYS[:10]:
        if k == 'vs_pytorch' and heads[k] is None:  # torch is optional
            continue
        assert finite(heads[k]), k
    for k in ('inference_speedup', 'matmul_peak_fraction', 'reader_floor_ratio',
              'reader_speedup_test', 'reader_worker_scaling', 'pkl_speedup'):
        assert heads[k] > 0, k
    for k in ('shift_overhead_exported', 'shift_overhead_eager'):
        assert heads[k] > -1, k  # a ratio of two times, minus 1
    # each headline is its part's figure; the shift overhead and vs_pytorch come from the
    # process holding TSN and TSM alone, the crowded figures are kept beside them
    for part, keys in HEADLINE.items():
        if part not in DEFAULT:
            continue
        for k in keys:
            if part != 'pair' and k in HEADLINE['pair']:
                continue
            if k == 'int8_agreement_realclips':  # --quick: generated clips, no such figure
                assert heads[k] is None and data[part]['realclips']['source'] == 'generated'
                continue
            assert heads[k] == data[part].get(k), (part, k)
    assert heads['shift_overhead_exported_crowded'] == data['crowded']['shift_overhead_exported']
    assert heads['vs_pytorch_crowded'] == data['crowded']['vs_pytorch']


def test_quick_shift_cost_modes(quick):
    data, _ = quick
    check_inference(data['crowded'])
    check_pair(data['pair'])
    check_primitives(data['primitives'])
    check_engines(data['engines'])
    check_floor(data['floor'])


def test_quick_training_e2e_int8(quick):
    data, _ = quick
    check_reader(data['reader'])
    check_train(data['step'])
    check_e2e(data['e2e'])
    check_quantize(data['int8'])


def test_quick_serving_and_online(quick):
    data, _ = quick
    s = data['serving']
    assert s['quick'] and s['clips'].startswith('generated')
    assert s['concurrency_speedup'] == pytest.approx(statistics.median(s['concurrency_ratios']),
                                                     abs=1e-3)
    for seq, conc, ratio in zip(s['sequential_8_s'], s['concurrent_8_s'],
                                s['concurrency_ratios']):
        assert ratio == pytest.approx(seq / conc, rel=rounded(seq, conc, digits=3), abs=1e-3)
    assert [c['clients'] for c in s['clients']] == [1, 2, 4, 8]
    for c in s['clients']:
        assert c['p50_s'] <= c['p95_s'] and c['mean_batch'] >= 1, c
        # requests / the unrounded wall time: off by what rounding `seconds` to 3 decimals
        # allows (over 1 % for the --quick run's few hundredths of a second), and its own
        assert c['throughput_rps'] == pytest.approx(
            c['requests'] / c['seconds'],
            rel=0.5e-3 / (c['seconds'] - 0.5e-3) + rounded(c['throughput_rps'], digits=3))
    o = data['online']
    assert o['browser'] == {'skipped': 'no browser run'}
    assert {(r['model'], r['engine'], r['precision']) for r in o['rows']} == {
        ('resnet50', 'paddle', 'fp32')}  # --quick: one model on one engine, fp32
    for r in o['rows']:
        assert r['floor'] == pytest.approx(1 / 4, abs=1e-3)  # 4 frames per clip
        assert r['frame_ms'] > 0 and r['clip_ms'] > 0 and r['states'] > 0
    assert o['targets']['resnet50_frame_vs_clip_every_engine'] == {
        'paddle fp32': o['rows'][0]['frame_vs_clip']}


def test_quick_results_never_land_among_the_committed_ones(monkeypatch, tmp_path):
    """A run without --out writes bench/results/<date>_<cpu>.json, merging parts; --quick
    the same name in a temporary folder."""
    import argparse
    from bench import common
    monkeypatch.setattr(common, 'RESULTS', str(tmp_path / 'results'))
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    quick = common.save({'a': {'x': 1}}, argparse.Namespace(out=None, quick=True))
    assert quick.startswith(str(tmp_path / 'tmp'))
    args = argparse.Namespace(out=None, quick=False)
    first = common.save({'a': {'x': 1}, 'headlines': {'h': 1}}, args, command='python one')
    second = common.save({'b': {'y': 2}, 'headlines': {'g': 2}}, args, command='python two')
    assert first == second and os.path.dirname(first) == str(tmp_path / 'results')
    date, cpu = os.path.splitext(os.path.basename(first))[0].split('_', 1)
    assert len(date) == 10 and date[4] == '-' and cpu == common.cpu_slug()
    with open(first, encoding='utf-8') as f:
        merged = json.load(f)
    assert merged['a'] == {'x': 1} and merged['b'] == {'y': 2}
    assert merged['headlines'] == {'h': 1, 'g': 2} and not merged['quick']
    assert merged['commands'] == {'a': 'python one', 'b': 'python two'}


def test_cpu_slug():
    from bench.common import cpu_slug
    assert cpu_slug('AMD EPYC') == 'amd-epyc'
    assert cpu_slug('AMD EPYC 7B13 64-Core Processor') == 'amd-epyc'
    assert cpu_slug('Intel(R) Xeon(R) Platinum 8480+') == 'intel-xeon'


def count_slices(prefix):
    """slice ops in an exported program (.json under PIR, .pdmodel before)."""
    if os.path.isfile(prefix + '.json'):
        with open(prefix + '.json', encoding='utf-8') as f:
            return f.read().count('"#":"1.slice"')
    from paddle.base.proto import framework_pb2
    with open(prefix + '.pdmodel', 'rb') as f:
        program = framework_pb2.ProgramDesc.FromString(f.read())
    return sum(op.type == 'slice' for block in program.blocks for op in block.ops)


def test_split_export_without_moves_leaves_out_only_the_moves(tmp_path):
    """The bench's timing-only program: the split program minus its frame moves (so it
    computes something else), and the real moves are back for every later export."""
    import numpy as np
    import paddle
    import engines
    from bench import common
    from testing.models import build_tsm
    eng = engines.engine('paddle')
    shape = [4, 3, 32, 32]
    model = build_tsm(18, 10, 4, 32, 0.125)
    x = np.random.default_rng(1).standard_normal([1, *shape]).astype('float32')
    without = common.export_split_without_moves(model, str(tmp_path / 'without' / 'model'),
                                                shape)
    split = eng.export(model, str(tmp_path / 'split' / 'model'), shape, 'split', 1)
    # the moves are the only slices along frames: 2 folds x 8 blocks x 1 clip of ResNet-18
    assert count_slices(split) - count_slices(without) == 2 * 8
    eager = model(paddle.to_tensor(x)).numpy()
    assert np.abs(eng.load(split, 1, 'fp32', 1).run(x) - eager).max() < 1e-4
    assert np.abs(eng.load(without, 1, 'fp32', 1).run(x) - eager).max() > 1e-3


def check_e2e(d):
    """bench/e2e.py --quick: every figure is recomputed here from the times written beside it."""
    assert d['paddlevideo_ms'] == 1355 and d['quick'] and d['folder_clips'] == 3
    runs = d['e2e_latency_runs_s']
    assert len(runs) == 2 and min(runs) > 0
    latency = d['e2e_latency_s']
    assert latency == pytest.approx(statistics.median(runs), abs=1e-4)
    assert d['e2e_vs_paddlevideo'] == pytest.approx(1.355 / latency)
    stages = d['e2e_breakdown_s']
    assert set(stages) == {'open', 'decode', 'resize', 'crop_normalize', 'model',
                           'postprocess', 'other'}
    assert min(stages.values()) >= 0 and stages['decode'] > 0 and stages['model'] > 0
    rest = sum(v for k, v in stages.items() if k != 'other')
    assert stages['other'] == pytest.approx(max(0.0, latency - rest), abs=5e-4 * 7)
    assert d['decode_backend'] == 'PyAVVideo'  # generated H.264 in mp4: the fast path
    assert all(positive(v) for v in d['decode_backends_s'].values())
    assert positive(d['e2e_latency_cpu_s'])
    assert set(d['e2e_latency_by_engine_threads_s']) == {'1', str(d['cpus'])}
    # the plans: one video in this process, a folder in workers (inference/core_plan.py)
    one, folder = d['plans']['one_video'], d['plans']['folder']
    assert one['workers'] == 0 and one['engine_threads'] == one['decode_threads'] == d['cpus']
    assert folder['workers'] == min(3, d['cpus']) and folder['decode_threads'] == 1
    n, times, cpu = d['folder_clips'], d['folder_times_s'], d['folder_cpu_s']
    for key in ('decode_only', 'model_only', 'model_only_1t', 'folder'):
        t = times[key]
        assert len(t) == 1 and min(t) > 0, key
        assert d[f"{key}_clips_per_s"] == pytest.approx(n / statistics.median(t),
                                                        rel=rounded(*t, digits=4)), key
    bound = [f / max(a, b) for f, a, b in zip(times['folder'], times['decode_only'],
                                              times['model_only'])]
    tol = rounded(*times['folder'], *times['decode_only'], *times['model_only'], digits=4)
    assert d['folder_vs_bound_rounds'] == pytest.approx(bound, rel=tol)
    assert d['folder_vs_bound'] == pytest.approx(statistics.median(bound), rel=tol)
    assert min(cpu['decode_only']) > 0 and min(cpu['model_only_1t']) > 0
    cpu_bound = [f / ((a + b) / d['cpus']) for f, a, b in zip(
        times['folder'], cpu['decode_only'], cpu['model_only_1t'])]
    tol = rounded(*times['folder'], *cpu['decode_only'], *cpu['model_only_1t'], digits=4)
    assert d['folder_vs_cpu_bound'] == pytest.approx(statistics.median(cpu_bound), rel=tol)
    assert len(d['threads_grid']) >= 1
    for g in d['threads_grid']:
        assert g['clips_per_s'] == pytest.approx(n / statistics.median(g['times_s']),
                                                 rel=rounded(*g['times_s'], digits=4))


def check_floor(d):
    """shift_cost.py --mode floor --quick (R18, 8 blocks, fp32 only): the custom op sits
    before each block's first convolution and gives the eager TSM's probabilities; OpenVINO
    ran it as a Reference node, which TSN and the split export have none of."""
    assert d['extension_ops'] == 8  # ResNet-18: 2+2+2+2 blocks
    assert d['ext_probs_max_abs_diff'] < 1e-5 and d['split_probs_max_abs_diff'] < 1e-5
    assert 'bf16' not in d
    for precision in ['fp32']:
        per = d[precision]
        for k in ('split', 'no_moves', 'extension'):
            low, high = per['quartiles'][k]
            assert low - 1e-3 <= per['overhead'][k] <= high + 1e-3, (precision, k)
        assert d['overhead_extension'][precision] == per['overhead']['extension']
        nodes = per['per_node_ms']
        assert nodes['extension'].get('Reference', 0) > 0, nodes['extension']
        assert 'Reference' not in nodes['tsn'] and 'Reference' not in nodes['split']


def check_engines(d):
    """shift_cost.py --mode engines --quick: PyTorch's time and every vs_pytorch recomputed
    from the times beside them; one fp32 row per engine (--quick), each engine's export
    equal to eager."""
    import engines
    precisions = ['fp32']
    rows = {(r['engine'], r['precision']): r for r in d['table']}
    assert set(rows) == {(name, p) for name in d['engines'] for p in precisions
                         if name != 'onnxruntime' or p == 'fp32'}  # ORT runs no bf16
    for r in d['table']:
        assert r['tsn_s'] > 0 and r['tsm_s'] > 0 and r['chosen']  # one formulation each
        assert r['formulation'] == engines.FORMULATION[r['engine']]
        assert r['ratio_quartiles'][0] <= r['ratio_quartiles'][1]
    for name, e in d['engines'].items():
        assert e['probs_max_abs_diff'][engines.FORMULATION[name]] < 1e-5, name
        if name == 'openvino':  # the kernels that ran, bf16 ones for bf16
            assert all(('bf16' in e[p]['kernels']) == (p == 'bf16') for p in precisions)
    for precision, name in d['default_engine'].items():
        if (name, precision) in rows:
            assert d['shift_overhead_default'][precision] == rows[name, precision][
                'shift_overhead']
    torch = d['pytorch']
    if 'skipped' in torch:  # torch is optional (requirements-convert.txt)
        assert all(r['vs_pytorch'] is None for r in d['table']) and d['vs_pytorch_default'] is None
        return
    runs = torch['runs_s']
    assert len(runs) == 3 and min(runs) > 0  # --quick: 3 rounds
    assert torch['tsm_s'] == pytest.approx(statistics.median(runs), abs=1e-5)
    assert torch['logits_max_rel_diff'] < 1e-4  # the same network as the engines run
    assert d['table']
    for r in d['table']:
        assert r['vs_pytorch'] == pytest.approx(torch['tsm_s'] / r['tsm_s'], rel=1e-12), r
    precision = d['default_precision']
    default = [r for r in d['table'] if r['precision'] == precision and r['chosen']
               and r['engine'] == d['default_engine'][precision]]
    if not default:  # --quick times Paddle Inference's fp32 only, not the default's row
        assert set(d['engines']) == {'paddle'} and d['vs_pytorch_default'] is None
        return
    assert d['vs_pytorch_default'] == pytest.approx(torch['tsm_s'] / default[0]['tsm_s'],
                                                    rel=1e-12)


def check_quantize(d):
    """bench/int8.py --quick: the per-clip times are the medians of the rounds, the
    rounds' speedups their quotients, the paired ones inside their pairs' range."""
    rounds = d['rounds']
    variants = [k for k in ('int8', 'int8_bf16_rest') if k in rounds]
    assert set(rounds) == {'fp32', 'bf16', *variants} and 'int8' in variants
    for name, runs in rounds.items():
        assert len(runs) == 2 and min(runs) > 0, name  # --quick: 2 rounds
        assert d[f'{name}_s_per_clip'] == pytest.approx(statistics.median(runs), abs=1e-4)
    for name in variants:
        for other in ('fp32', 'bf16'):
            key = f'{name}_speedup_vs_{other}'
            quotient = statistics.median(rounds[other]) / statistics.median(rounds[name])
            assert d[key + '_rounds'] == pytest.approx(
                quotient, rel=rounded(*rounds[other], *rounds[name], digits=4), abs=5e-4), key
            low, high = d[key + '_pairs_range']  # each rounded to 3 decimals
            assert 0 < low and low - 1e-3 <= d[key] <= high + 1e-3, key
    real = d['realclips']
    # two folds of the 6 generated clips, each scored by the model the other calibrated
    assert real['source'] == 'generated' and real['clips'] == 6 and real['failed_videos'] == 0
    assert real['top1_agreement'] * 6 == pytest.approx(round(real['top1_agreement'] * 6))
    assert d['int8_agreement_generated'] == real['top1_agreement']
    assert 'int8_agreement_realclips' not in d  # generated clips are not the real ones
    assert 0 <= real['mean_abs_prob_diff'] <= real['max_abs_prob_diff'] <= 1
    assert 'int8_agreement_demo' not in d  # no --demo_dir


REPORT_RUN = {  # a results file, written by hand
    'quick': False, 'commands': {'engines': 'python bench/run.py', 'e2e': 'python bench/run.py'},
    'machine': {'cpu_model': 'Test Xeon', 'cpus_available': 2, 'mem_gb': 23.5,
                'load_avg_at_start': [0.5, 0.4, 0.3], 'load_avg_at_end': [1.0, 0.8, 0.6]},
    'engines': {
        'default_precision': 'bf16', 'default_engine': {'fp32': 'openvino', 'bf16': 'openvino'},
        'pytorch': {'tsm_s': 0.39, 'version': '2.13'},
        'engines': {'paddle': {'fp32': {}},
                    'openvino': {'fp32': {'kernels': 'brgconv_avx512_1x1_f32 x36'},
                                 'bf16': {'kernels': 'brgconv_avx512_amx_1x1_bf16 x36'}}},
        'table': [
            {'engine': 'paddle', 'precision': 'fp32', 'formulation': 'conv', 'chosen': True,
             'tsn_s': 0.225, 'tsm_s': 0.308, 'shift_overhead': 0.37, 'vs_pytorch': 0.39 / 0.308},
            {'engine': 'openvino', 'precision': 'fp32', 'formulation': 'split', 'chosen': True,
             'tsn_s': 0.204, 'tsm_s': 0.24, 'shift_overhead': 0.05, 'vs_pytorch': 0.39 / 0.24},
            {'engine': 'openvino', 'precision': 'bf16', 'formulation': 'split', 'chosen': True,
             'tsn_s': 0.041, 'tsm_s': 0.075, 'shift_overhead': 0.84, 'vs_pytorch': 0.39 / 0.075},
            {'engine': 'openvino', 'precision': 'bf16', 'formulation': 'conv', 'chosen': False,
             'tsn_s': 0.041, 'tsm_s': 0.08, 'shift_overhead': 0.95, 'vs_pytorch': 0.39 / 0.08}],
        'shift_overhead_default': {'fp32': 0.05, 'bf16': 0.84},
        'vs_pytorch_default': 0.39 / 0.075},
    'e2e': {'clips': 'realclips', 'e2e_latency_clip': 'mmaction2_demo.mp4', 'paddlevideo_ms': 1355,
            'e2e_latency_s': 0.238, 'e2e_vs_paddlevideo': 1.355 / 0.238, 'folder_clips': 12,
            'folder_clips_per_s': 2.8, 'decode_only_clips_per_s': 4.0,
            'model_only_clips_per_s': 6.0, 'folder_vs_bound': 1.66, 'folder_vs_cpu_bound': 1.04},
    'floor': {'bf16': {'overhead': {'split': 0.14, 'no_moves': 0.06, 'extension': 1.2},
                       'per_node_ms': {'tsn': {'Convolution': 50.0, 'Reorder': 1.5},
                                       'extension': {'Convolution': 52.0, 'Reorder': 40.0,
                                                     'Reference': 20.0}}}},
    'serving': {'concurrency_speedup': 1.31, 'clients': []},
}


def verdicts(text):
    """The targets' verdicts, in order: the bold word ending each '- ... <= bound' line."""
    return [ln.rsplit('**', 2)[1] for ln in text.splitlines()
            if ln.startswith('- ') and (' <= ' in ln or ' >= ' in ln)]


def test_report_verdicts_and_table():
    from bench.report import render
    text = render(REPORT_RUN)
    # targets by hand: 0.05 <= 0.05 met, 0.84 not; 5.2 >= 5 met; 0.238 <= 0.25 met; 1.66 > 1.2
    assert verdicts(text) == ['met', 'not met', 'met', 'met', 'not met']
    rows = [ln for ln in text.splitlines() if ln.startswith('| ') and 's/clip' not in ln]
    assert len(rows) == 4 + 1  # the table's rows, then PyTorch's
    cells = [[c.strip() for c in ln.strip('|').split('|')] for ln in rows]
    assert cells[0][:7] == ['Paddle Inference + oneDNN', 'fp32', 'conv', '0.225', '0.308',
                            '+37%', '1.27x']
    # the default row: bf16 (the default precision) on openvino, its own formulation only
    assert [c[0] for c in cells].count('OpenVINO **(default)**') == 1
    assert cells[2][:7] == ['OpenVINO **(default)**', 'bf16', 'split', '0.041', '0.075',
                            '+84%', '5.20x']
    assert cells[3][:3] == ['OpenVINO', 'bf16', "conv (not the engine's own)"]
    assert cells[4][4] == '0.39' and cells[4][6] == '1.00x'
    floor = text.split('Where the shift costs')[1].split('End to end')[0]
    assert floor.strip().splitlines()[2:] == [
        '- bf16: the split export +14%; the same with no frame moves (wrong outputs, the '
        'layout alone) +6%; the shift as an OpenVINO extension (custom op) +120%, of which '
        "reorders 40.0 ms and the op 20.0 ms against TSN's 51.5 ms of nodes."]  # no fp32 part
    assert text.split('int8:')[1].split('Targets')[0].strip() == 'Not run.'  # no 'int8'
    others = text.split('The other parts (headline figures):')[1].split('Machine:')[0]
    assert others.strip() == '- serving: concurrency_speedup 1.31.'
    assert '0.238 s' in text and '5.69x' in text  # 1.355 / 0.238
    assert ("OpenVINO's convolution kernels (TSN): fp32: brgconv_avx512_1x1_f32 x36; "
            "bf16: brgconv_avx512_amx_1x1_bf16 x36.") in text
    assert 'Test Xeon, 2 cores' in text and 'end 1.00 0.80 0.60' in text
    assert 'Commands: `python bench/run.py`.' in text


def test_report_says_not_run_for_missing_parts(tmp_path):
    from bench.report import render
    partial = {k: v for k, v in REPORT_RUN.items() if k in ('machine', 'commands', 'e2e')}
    text = render(partial)
    assert verdicts(text) == ['not run', 'not run', 'not run', 'met', 'not met']
    assert '| engine |' not in text and text.split('End to end')[0].rstrip().endswith('Not run.')
    # the CLI on a file, and a one-line error for a file that is not there
    path = tmp_path / 'bench.json'
    path.write_text(json.dumps(partial))
    res = run_cli(os.path.join('bench', 'report.py'), str(path), '--stdout', timeout=60)
    assert res.returncode == 0 and res.stdout == text
    res = run_cli(os.path.join('bench', 'report.py'), str(tmp_path / 'absent.json'),
                  '--stdout', timeout=60)
    assert res.returncode != 0 and 'absent.json' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_report_page_is_the_template_with_every_run(tmp_path):
    """The page is the template's method notes with {{runs}} replaced by one section per
    results file, newest first; docs/performance.md is that page for bench/results/."""
    from bench import report
    template = tmp_path / 'template.md'
    template.write_text('# Notes\n\nmethod\n\n{{runs}}\nend\n')
    for name in ('2026-01-02_amd-epyc.json', '2026-03-04_intel-xeon.json'):
        (tmp_path / name).write_text(json.dumps(REPORT_RUN))
    text = report.page(report.results_files(str(tmp_path)), str(template))
    assert text.startswith('# Notes\n\nmethod\n\n### 2026-03-04, intel-xeon\n')
    assert text.index('### 2026-03-04') < text.index('### 2026-01-02, amd-epyc')
    assert text.count('| engine | precision |') == 2 and text.endswith('\nend\n')
    with open(os.path.join(ROOT, 'docs', 'performance.md'), encoding='utf-8') as f:
        committed = f.read()
    assert committed == report.page(report.results_files()), \
        'docs/performance.md is stale: run python bench/report.py'


def imported_modules(path):
    """The top-level names a Python file imports (import x.y, from x.y import z -> x)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split('.')[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def test_bench_stays_apart_from_the_tests_and_the_project_names():
    """bench/ imports nothing from tests/ (its helpers are in testing/); no bench file is
    named like a top-level module or package of the project, which `python bench/x.py`
    (bench/ first on sys.path) would make it shadow; at most 8 scripts."""
    files = sorted(glob.glob(os.path.join(ROOT, 'bench', '*.py')))
    for path in files:
        assert 'tests' not in imported_modules(path), path
        with open(path, encoding='utf-8') as f:
            assert 'conftest' not in f.read(), path
    top = {os.path.splitext(n)[0] for n in os.listdir(ROOT)
           if n.endswith('.py') or os.path.isdir(os.path.join(ROOT, n))}
    assert {'train', 'serve', 'reader', 'utils', 'engines', 'testing'} <= top  # the check sees them
    shadows = {os.path.splitext(os.path.basename(p))[0] for p in files} & top
    assert not shadows, shadows
    scripts = [p for p in files if "__name__ == '__main__'" in open(p, encoding='utf-8').read()]
    assert len(scripts) <= 8, scripts


def test_the_product_never_imports_testing():
    """testing/ is test and benchmark support: no file outside tests/, bench/ and testing/
    imports it."""
    found = []
    for path in glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.split(os.sep)[0] in ('tests', 'bench', 'testing') or rel.startswith('.'):
            continue
        if 'testing' in imported_modules(path):
            found.append(rel)
    assert not found, found

