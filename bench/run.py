"""Run the bench's parts and write their figures and the headline numbers into one
results file, bench/results/<date>_<cpu>.json (--quick: the same name in a temporary
folder; --out FILE: FILE).

    python bench/run.py [--quick] [--only engines,pair,...] [--threads N] [--demo_dir DEMO]
    python bench/report.py    # docs/performance.md from every results file

Parts (each script's docstring says what it measures):

    engines, pair, crowded, floor, primitives   bench/shift_cost.py --mode PART
    reader, step                                bench/training_speed.py --parts PART
    e2e                                         bench/e2e.py
    int8                                        bench/int8.py (--demo_dir: on the demo too)
    serving                                     bench/serving_load.py
    online                                      bench/online_latency.py
    soak                                        bench/serving_load.py --soak (not by default)

Each part runs in a fresh process (--quick: in this one, tiny sizes, to check that the
scripts run; the figures mean nothing then).  Timings are medians of interleaved
repetitions after a warm-up.  shift_overhead_exported and vs_pytorch are taken from
'pair': TSN and TSM alone in their process (then PyTorch's TSM), as a deployment runs one
model; the figures of 'crowded', whose process also holds ONNX Runtime and eight other
predictors, are kept as shift_overhead_exported_crowded and vs_pytorch_crowded.
"""
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402

# part: (bench script, its flags)
PARTS = {
    'engines': ('shift_cost', ['--mode', 'engines']), 'pair': ('shift_cost', ['--mode', 'pair']),
    'crowded': ('shift_cost', ['--mode', 'crowded']), 'floor': ('shift_cost', ['--mode', 'floor']),
    'primitives': ('shift_cost', ['--mode', 'primitives']),
    'reader': ('training_speed', ['--parts', 'reader']),
    'step': ('training_speed', ['--parts', 'step']), 'e2e': ('e2e', []), 'int8': ('int8', []),
    'serving': ('serving_load', []), 'online': ('online_latency', []),
    'soak': ('serving_load', ['--soak']),
}
DEFAULT = [p for p in PARTS if p != 'soak']
HEADLINE = {
    'crowded': ('shift_overhead_exported', 'shift_overhead_eager', 'vs_pytorch',
                'inference_speedup', 'matmul_peak_fraction', 'export_max_abs_diff'),
    'pair': ('shift_overhead_exported', 'vs_pytorch'),
    'engines': ('shift_overhead_default', 'default_engine', 'default_precision',
                'vs_pytorch_default'),
    'floor': ('overhead_no_moves', 'overhead_extension'),
    'primitives': ('shift_overhead_primitives',),
    'reader': ('reader_floor_ratio', 'reader_speedup_test', 'reader_worker_scaling',
               'decode_process_scaling', 'pkl_speedup'),
    'step': ('train_step_clips_per_s', 'train_peak_mem_mb'),
    'e2e': ('e2e_latency_s', 'e2e_vs_paddlevideo', 'folder_clips_per_s',
            'decode_only_clips_per_s', 'model_only_clips_per_s', 'folder_vs_bound',
            'folder_vs_cpu_bound'),
    'int8': ('int8_s_per_clip', 'int8_speedup_vs_fp32', 'int8_speedup_vs_bf16',
             'int8_agreement_realclips', 'int8_agreement_demo'),
    'serving': ('concurrency_speedup',),
    'online': ('targets',),
    'soak': ('memory', 'healthz_after'),
}


def headlines(part, data):
    """{headline key: the part's figure, None where it wrote none}."""
    return {key: data.get(key) for key in HEADLINE[part]}


def part_flags(part, args):
    """The script and its flags for `part`."""
    script, flags = PARTS[part]
    flags = flags + ['--threads', str(args.threads)] + (['--quick'] if args.quick else [])
    if part == 'int8' and args.demo_dir:
        flags += ['--demo_dir', os.path.abspath(args.demo_dir)]
    return script, flags


def run_part(part, args):
    """One part's figures: in a fresh process, or (--quick) in this one."""
    script, flags = part_flags(part, args)
    if not args.quick:
        return common.run_script(script, flags, timeout=7200)[part]
    module = importlib.import_module(f'bench.{script}')
    return module.measure(module.parse_args(flags))[part]


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--only', default=','.join(DEFAULT), help='comma-separated parts')
    p.add_argument('--demo_dir', help="'int8': int8 agreement on this tools/demo.py "
                                      "--out_dir's held-out videos")
    args = p.parse_args(argv)
    unknown = [n for n in args.only.split(',') if n not in PARTS]
    if unknown:
        p.error(f"--only: unknown {', '.join(unknown)} (use {','.join(PARTS)})")
    return args


def measure(args):
    """{part: figures} of every part in --only, and the headlines."""
    result = {'headlines': {}}
    for part in args.only.split(','):
        t = time.perf_counter()
        data = run_part(part, args)
        data['wall_s'] = round(time.perf_counter() - t, 1)
        result[part] = data
        heads = headlines(part, data)
        result['headlines'].update(heads)
        print(f"{part}: {', '.join(f'{k}={v}' for k, v in heads.items())}", flush=True)
    if 'pair' in result:  # the headlines from the uncrowded process, whatever the order
        for key in ('shift_overhead_exported', 'vs_pytorch'):
            result['headlines'][key] = result['pair'][key]
            if 'crowded' in result:
                result['headlines'][key + '_crowded'] = result['crowded'][key]
    return result


def main(argv=None):
    args = parse_args(argv)
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
