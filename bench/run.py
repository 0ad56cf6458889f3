"""Run every bench script and write one JSON with the headline numbers.

    python bench/run.py [--quick] --out bench.json [--only inference,pair,primitives,reader,train]

--quick: tiny sizes, to check that the scripts run (well under a minute of work); the
numbers mean nothing then.  Each script runs in a fresh process; see its docstring for
what it measures.  Timings are medians of interleaved repetitions after a warm-up.

shift_overhead_exported and vs_pytorch are taken from 'pair' (bench/inference.py
--pair_only): TSN and TSM alone in their process (then PyTorch's TSM), as a deployment
runs one model; the figures of the 'inference' run, whose process also holds ONNX
Runtime and eight other predictors, are kept as shift_overhead_exported_crowded and
vs_pytorch_crowded.  'engines' (bench/shift_engines.py) is the table of engine x precision
x {TSN, TSM}: s/clip and shift overhead, each engine in a process of its own;
shift_overhead_default is the row of the engine `--backend auto` takes, per precision.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SCRIPTS = ('inference', 'pair', 'engines', 'primitives', 'reader', 'train')
# name: (bench script, its extra flags)
RUNS = {'pair': ('inference', ['--pair_only']), 'engines': ('inference', ['--engines'])}
HEADLINE = {
    'inference': ('shift_overhead_exported', 'shift_overhead_eager', 'vs_pytorch',
                  'inference_speedup', 'matmul_peak_fraction', 'export_max_abs_diff'),
    'pair': ('shift_overhead_exported', 'vs_pytorch'),
    'engines': ('shift_overhead_default', 'default_engine'),
    'primitives': ('shift_overhead_primitives',),
    'reader': ('reader_floor_ratio', 'reader_speedup_test', 'reader_worker_scaling',
               'decode_process_scaling', 'pkl_speedup'),
    'train': ('train_step_clips_per_s', 'train_peak_mem_mb'),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true')
    p.add_argument('--out', required=True)
    p.add_argument('--only', default=','.join(SCRIPTS), help='comma-separated scripts')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    args = p.parse_args(argv)
    result = {'machine': common.machine_info(), 'quick': args.quick,
              'command': ' '.join(['python', 'bench/run.py'] + (argv or sys.argv[1:]))}
    extra = (['--quick'] if args.quick else []) + ['--threads', str(args.threads)]
    for name in args.only.split(','):
        t = time.perf_counter()
        script, flags = RUNS.get(name, (name, []))
        data = common.run_script(script, extra + flags, timeout=600 if args.quick else 3600)
        data['wall_s'] = round(time.perf_counter() - t, 1)
        result[name] = data
        for key in HEADLINE[name]:
            result[key] = data.get(key)
        print(f"{name}: {', '.join(f'{k}={data.get(k)}' for k in HEADLINE[name])}", flush=True)
    if 'pair' in result:  # the headlines from the uncrowded process, whatever the order
        for key in ('shift_overhead_exported', 'vs_pytorch'):
            result[key] = result['pair'][key]
            if 'inference' in result:
                result[key + '_crowded'] = result['inference'][key]
    result['machine']['load_avg_at_end'] = os.getloadavg()
    common.write_json(args.out, result)


if __name__ == '__main__':
    main()
