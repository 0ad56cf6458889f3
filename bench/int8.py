"""int8 by post-training quantization (tools/quantize.py: NNCF on OpenVINO) against float32
and bfloat16 on OpenVINO: speed, and how often int8 keeps float32's top-1.

speed      ResNet-50 TSM (random weights, BN calibrated), one clip of 8 frames at 224,
           OpenVINO fp32, bf16 and int8 (the cache's split export, batch 1, as
           `--precision` runs them) in this process, every one once per round
           (common.interleaved: medians) and int8 against each in back-to-back pairs
           (common.paired_ratio: the headline ratios).
realclips  the same model quantized on the clips of ../shared/realclips (common.clips),
           decoded by the project's reader (configs/tsm.yaml's INFER section) in two
           folds: each half calibrates the model that scores the other half, so every clip
           is scored by an int8 model that did not see it.  With random weights top-1 is
           a weak measure (near-uniform probabilities): the mean |p_int8 - p_fp32| and
           the agreement where fp32's top-2 gap is clear are given too.
demo       --demo_dir D (tools/demo.py --out_dir D, already run): the demo-trained TSM
           quantized by tools/quantize.py on D/data/train.list, then predict.py --precision
           int8 and fp32 on the 128 held-out videos (D/data/val.list), through the CLI.

    python bench/int8.py [--quick] [--demo_dir /tmp/demo_out] [--out FILE]

Keys: int8_s_per_clip, fp32_s_per_clip, bf16_s_per_clip; int8_speedup_vs_fp32 and
int8_speedup_vs_bf16 (paired: time of fp32 or bf16 / time of int8; *_rounds: from the
rounds' medians); the same for int8_bf16_rest (on bf16 CPUs: the int8 model with what is
not quantized in bf16 instead of f32, realclips['int8_bf16_rest'] its agreement);
int8_agreement_realclips, int8_realclips_mean_abs_prob_diff,
int8_realclips_clear_agreement (on generated clips: int8_agreement_generated instead);
int8_agreement_demo, int8_demo_top1 / fp32_demo_top1
(accuracy on the labels); details under 'realclips' and 'demo'.  --quick: R18 at 32 px
on generated clips, a smoke run (the figures mean nothing).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from testing.models import build_tsm  # noqa: E402

import numpy as np  # noqa: E402


def clip_list(folder, quick):
    """A list file of the clips (common.clips: ../shared/realclips, edge cases too, or 6
    generated ones) -> (its path, 'realclips' or 'generated')."""
    paths, _, source = common.clips(folder, 6, quick, edge_cases=True)
    out = os.path.join(folder, 'clips.list')
    with open(out, 'w', encoding='utf-8') as f:
        f.writelines(p + '\n' for p in paths)
    return out, source


def decoded_clips(cfg, filelist):
    """Every clip of the list as predict.py reads it -> list of [1, T, 3L, S, S], failures
    skipped (utils.quantization.CalibrationClips, keeping all).  Decoded in this process:
    with reader worker processes here, every full run (R50 on the real clips, 7 runs)
    segfaulted minutes later; not understood (tools/quantize.py with workers exits
    cleanly, the --quick runs did too)."""
    from reader import get_reader, parse_list
    from jobs.quantize_job import CalibrationClips
    items = parse_list(filelist, cfg.MODEL.format, need_label=False)
    dataset = get_reader('TSM', 'infer', cfg, items=items)
    clips = CalibrationClips(dataset, 0, 10 ** 6, filelist, keep=10 ** 6)
    for _ in clips:
        pass
    return clips.kept, clips.failed


def int8_runner(eng, xml, threads, variant):
    """'int8': as `--precision int8` runs it (what is not quantized in float32);
    'int8_bf16_rest': that in bfloat16 (OpenVINO's own default on AMX CPUs), for comparison."""
    saved = dict(eng.HINTS)
    if variant == 'int8_bf16_rest':
        eng.HINTS['int8'] = 'bf16'
    try:
        return eng.load(xml, threads, 'int8', 1)
    finally:
        eng.HINTS.update(saved)


def probs_of(runner, clips):
    from engines.int8 import softmax
    return softmax(runner.run(np.concatenate(clips)))


def realclips_and_speed(args, tmp, threads):
    """R50 (--quick: R18) TSM: two-fold int8 agreement on the clips, and the speed of
    fp32, bf16 and int8 (the first fold's model)."""
    import engines
    from engines import int8 as quantize
    from engines.base import cpu_has_bf16
    from utils.config_utils import apply_overrides, parse_config
    eng = engines.engine('openvino')
    cfg = parse_config(os.path.join(common.ROOT, 'configs', 'tsm.yaml'))
    if args.quick:
        depth, classes, seg, size, reps, pairs = 18, 10, 4, 32, 2, 4
        apply_overrides(cfg, [f'MODEL.seg_num={seg}', 'MODEL.num_classes=10',
                              'INFER.short_size=36', f'INFER.target_size={size}'])
    else:
        depth, classes, seg, size, reps, pairs = 50, 400, 8, 224, 15, 25
    listfile, source = clip_list(tmp, args.quick)
    clips, failed = decoded_clips(cfg, listfile)
    model = build_tsm(depth, classes, seg, size, 0.125)
    shape = [seg, 3, size, size]
    os.makedirs(os.path.join(tmp, 'fp32'))
    fp32_xml = common.export(eng, model, os.path.join(tmp, 'fp32', 'model'), shape, 'split',
                             1)
    fp32 = eng.load(fp32_xml, threads, 'fp32', 1)
    folds = [clips[0::2], clips[1::2]]
    variants = ('int8', 'int8_bf16_rest') if cpu_has_bf16() and not args.quick else ('int8',)
    scored, int8_xml, quantize_s = {k: [] for k in ('fp32', *variants)}, None, []
    for k, calib in enumerate(folds):
        t = time.perf_counter()
        qmodel = quantize.quantize_openvino(fp32_xml, calib, len(calib))
        quantize_s.append(round(time.perf_counter() - t, 1))
        xml = quantize.save_ir(qmodel, os.path.join(tmp, f'int8_{k}'))
        int8_xml = int8_xml or xml
        held_out = folds[1 - k]
        scored['fp32'].append(probs_of(fp32, held_out))
        for name in variants:
            scored[name].append(probs_of(int8_runner(eng, xml, threads, name), held_out))
    fp32_probs = np.concatenate(scored['fp32'])
    realclips = quantize.compare(fp32_probs, np.concatenate(scored['int8']))
    realclips.update(source=source, failed_videos=failed, quantize_s=quantize_s,
                     fake_quantize_ops=len(quantize.quantized_ops(qmodel)))
    if 'int8_bf16_rest' in scored:
        realclips['int8_bf16_rest'] = quantize.compare(
            fp32_probs, np.concatenate(scored['int8_bf16_rest']))

    runners = {'fp32': fp32, 'bf16': eng.load(fp32_xml, threads, 'bf16', 1),
               **{name: int8_runner(eng, int8_xml, threads, name) for name in variants}}
    x = np.concatenate(clips[:1])
    fns = {k: (lambda r=r: r.run(x)) for k, r in runners.items()}
    medians, times = common.interleaved(fns, reps)
    speed = {f'{k}_s_per_clip': round(v, 4) for k, v in medians.items()}
    for name in variants:
        for other in ('fp32', 'bf16'):
            ratio, ratios = common.paired_ratio(fns[other], fns[name], pairs)
            key = f'{name}_speedup_vs_{other}'
            speed[key] = round(ratio, 3)
            speed[key + '_pairs_range'] = [round(min(ratios), 3), round(max(ratios), 3)]
            speed[key + '_rounds'] = round(medians[other] / medians[name], 3)
    speed['rounds'] = {k: [round(t, 4) for t in v] for k, v in times.items()}
    speed.update(depth=depth, seg_num=seg, size=size, num_classes=classes, threads=threads,
                 precision_in_use={k: r.describe()['precision'] for k, r in runners.items()})
    return speed, realclips


def run_cli(args, env):
    res = subprocess.run([sys.executable, *args], cwd=common.ROOT, capture_output=True,
                         text=True, env=env, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{res.stderr[-3000:]}")
    return res


def demo(demo_dir, tmp, threads):
    """The demo-trained TSM: tools/quantize.py on the training list, then predict.py int8
    and fp32 on the held-out list (every class's probability: --infer_topk 8)."""
    from engines.int8 import compare
    data = os.path.join(demo_dir, 'data')
    weights = os.path.join(demo_dir, 'tsm', 'TSM.pdparams')
    overrides = ['-o', f'INFER.kinetics_labels={data}/label_list.txt']
    common_flags = ['--config', 'configs/tsm_demo.yaml', '--weights', weights,
                    '--cpu_threads', str(threads), *overrides]
    env = dict(os.environ, TSM_PADDLE_CACHE=os.path.join(tmp, 'cache'), PYTHONWARNINGS='ignore')
    t = time.perf_counter()
    run_cli(['tools/quantize.py', *common_flags, '--filelist', f'{data}/train.list',
             '--save_dir', os.path.join(tmp, 'demo_int8')], env)
    quantize_s = round(time.perf_counter() - t, 1)
    probs, labels = {}, {}
    with open(f'{data}/val.list', encoding='utf-8') as f:
        for line in f:
            if line.strip():
                path, label = line.rsplit(None, 1)
                labels[os.path.basename(path)] = int(label)
    for precision in ('fp32', 'int8'):
        out = os.path.join(tmp, f'demo_{precision}')
        run_cli(['predict.py', *common_flags, '--backend', 'openvino', '--precision', precision,
                 '--filelist', f'{data}/val.list', '--infer_topk', '8', '--save_dir', out], env)
        with open(os.path.join(out, 'predict_results.json'), encoding='utf-8') as f:
            records = json.load(f)
        probs[precision] = {}
        for r in records:
            p = np.zeros(8)
            p[r['top_indices']] = r['top_probs']
            probs[precision][os.path.basename(r['path'])] = p
    names = sorted(probs['fp32'])
    fp32 = np.stack([probs['fp32'][n] for n in names])
    int8 = np.stack([probs['int8'][n] for n in names])
    truth = np.array([labels[n] for n in names])
    res = compare(fp32, int8)
    res.update(quantize_s=quantize_s, fp32_top1=float((fp32.argmax(1) == truth).mean()),
               int8_top1=float((int8.argmax(1) == truth).mean()), calibration='train.list')
    return res


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--demo_dir', default=None,
                   help='tools/demo.py --out_dir, already run: int8 agreement on its held-out '
                        'videos')
    return p.parse_args(argv)


def measure(args):
    """{'int8': the figures of the docstring}."""
    threads = args.threads or len(os.sched_getaffinity(0))
    common.set_threads(threads)
    import paddle
    paddle.set_device('cpu')
    result = {'threads': threads}
    tmp = tempfile.mkdtemp(prefix='tsm_bench_int8_')
    try:
        speed, realclips = realclips_and_speed(args, tmp, threads)
        result.update(speed)
        result['realclips'] = realclips
        if realclips['source'] == 'realclips':
            result['int8_agreement_realclips'] = realclips['top1_agreement']
            result['int8_realclips_mean_abs_prob_diff'] = realclips['mean_abs_prob_diff']
            result['int8_realclips_clear_agreement'] = realclips['clear_top1_agreement']
        else:  # no ../shared/realclips (or --quick): not a figure on real clips
            result['int8_agreement_generated'] = realclips['top1_agreement']
        if args.demo_dir:
            result['demo'] = demo(args.demo_dir, tmp, threads)
            result['int8_agreement_demo'] = result['demo']['top1_agreement']
            result['int8_demo_top1'] = result['demo']['int8_top1']
            result['fp32_demo_top1'] = result['demo']['fp32_top1']
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {'int8': result}


def main(argv=None):
    args = parse_args(argv)
    result = measure(args)
    common.save(result, args)
    print(json.dumps({k: v for k, v in result['int8'].items()
                      if k.startswith(('int8', 'fp32', 'bf16'))}, indent=1))


if __name__ == '__main__':
    main()
