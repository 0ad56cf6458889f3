"""Run every bench script and write one JSON with the headline numbers.

    python bench/run.py [--quick] --out bench.json [--only inference,pair,engines,e2e,...]
                        [--demo_dir DEMO]
    python bench/report.py bench.json    # the README's Performance section, in markdown

--quick: tiny sizes, to check that the scripts run (about 1.5 minutes on 2 cores); the
numbers mean nothing then.  Each script runs in a fresh process; see its docstring for
what it measures.  Timings are medians of interleaved repetitions after a warm-up.

shift_overhead_exported and vs_pytorch are taken from 'pair' (bench/inference.py
--pair_only): TSN and TSM alone in their process (then PyTorch's TSM), as a deployment
runs one model; the figures of the 'inference' run, whose process also holds ONNX
Runtime and eight other predictors, are kept as shift_overhead_exported_crowded and
vs_pytorch_crowded.  'engines' (bench/shift_engines.py) is the table of engine x precision
x {TSN, TSM}: s/clip and shift overhead, each engine in a process of its own;
shift_overhead_default is the row of the engine `--backend auto` takes, per precision;
every row's vs_pytorch divides PyTorch eager fp32 (its own process, same clip and threads)
by the row's TSM time, vs_pytorch_default for the row predict.py runs by default.
'floor' (bench/shift_floor.py): on OpenVINO, the split layout with no frame moves and the
shift as an engine extension (a custom op), each against TSN.
'e2e' (bench/e2e.py): predict.py end to end, one 10 s clip warm and a folder, beside
PaddleVideo's 1355 ms.  'quantize' (bench/quantize.py): int8 against fp32 and bf16 on
OpenVINO, and int8's top-1 agreement with fp32 on the real clips (../shared/realclips;
without them, generated clips: 'realclips.source' says which) and, with --demo_dir (a
tools/demo.py --out_dir already run), on the demo's held-out videos.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SCRIPTS = ('inference', 'pair', 'engines', 'floor', 'primitives', 'reader', 'train', 'e2e',
           'quantize')
# name: (bench script, its extra flags)
RUNS = {'pair': ('inference', ['--pair_only']), 'engines': ('inference', ['--engines']),
        'floor': ('shift_floor', [])}
HEADLINE = {
    'inference': ('shift_overhead_exported', 'shift_overhead_eager', 'vs_pytorch',
                  'inference_speedup', 'matmul_peak_fraction', 'export_max_abs_diff'),
    'pair': ('shift_overhead_exported', 'vs_pytorch'),
    'engines': ('shift_overhead_default', 'default_engine', 'default_precision',
                'vs_pytorch_default'),
    'floor': ('overhead_no_moves', 'overhead_extension'),
    'primitives': ('shift_overhead_primitives',),
    'reader': ('reader_floor_ratio', 'reader_speedup_test', 'reader_worker_scaling',
               'decode_process_scaling', 'pkl_speedup'),
    'train': ('train_step_clips_per_s', 'train_peak_mem_mb'),
    'e2e': ('e2e_latency_s', 'e2e_vs_paddlevideo', 'folder_clips_per_s',
            'decode_only_clips_per_s', 'model_only_clips_per_s', 'folder_vs_bound',
            'folder_vs_cpu_bound'),
    'quantize': ('int8_s_per_clip', 'int8_speedup_vs_fp32', 'int8_speedup_vs_bf16',
                 'int8_agreement_realclips', 'int8_agreement_demo'),
}


def headlines(name, data):
    """{headline key: the script's figure, None where the script wrote none}."""
    return {key: data.get(key) for key in HEADLINE[name]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true')
    p.add_argument('--out', required=True)
    p.add_argument('--only', default=','.join(SCRIPTS), help='comma-separated scripts')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    p.add_argument('--demo_dir', help="'quantize': int8 agreement on this tools/demo.py "
                                      "--out_dir's held-out videos")
    args = p.parse_args(argv)
    unknown = [n for n in args.only.split(',') if n not in SCRIPTS]
    if unknown:
        p.error(f"--only: unknown {', '.join(unknown)} (use {','.join(SCRIPTS)})")
    result = {'machine': common.machine_info(), 'quick': args.quick,
              'command': ' '.join(['python', 'bench/run.py'] + (argv or sys.argv[1:]))}
    extra = (['--quick'] if args.quick else []) + ['--threads', str(args.threads)]
    for name in args.only.split(','):
        t = time.perf_counter()
        script, flags = RUNS.get(name, (name, []))
        if name == 'quantize' and args.demo_dir:
            flags = flags + ['--demo_dir', os.path.abspath(args.demo_dir)]
        data = common.run_script(script, extra + flags, timeout=600 if args.quick else 3600)
        data['wall_s'] = round(time.perf_counter() - t, 1)
        result[name] = data
        heads = headlines(name, data)
        result.update(heads)
        print(f"{name}: {', '.join(f'{k}={v}' for k, v in heads.items())}", flush=True)
    if 'pair' in result:  # the headlines from the uncrowded process, whatever the order
        for key in ('shift_overhead_exported', 'vs_pytorch'):
            result[key] = result['pair'][key]
            if 'inference' in result:
                result[key + '_crowded'] = result['inference'][key]
    result['machine']['load_avg_at_end'] = os.getloadavg()
    common.write_json(args.out, result)


if __name__ == '__main__':
    main()
