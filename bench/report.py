"""The README's Performance section from one bench/run.py JSON, in markdown.

    python bench/report.py bench.json

Prints the engine x precision x {TSN, TSM} table ('engines'), where OpenVINO's shift
overhead comes from ('floor'), the end-to-end and int8
lines ('e2e', 'quantize'), the issue's targets each met or not met, the machine and the
command.  Only what the JSON holds: a part the run left out reads "not run".
"""
import argparse
import json
import sys

NOT_RUN = 'not run'
ENGINE_NAMES = {'paddle': 'Paddle Inference + oneDNN', 'openvino': 'OpenVINO',
                'onnxruntime': 'ONNX Runtime'}
# label, how the figure is found in the JSON, comparison, bound
TARGETS = (
    ('shift overhead, default engine, fp32 (TSM / TSN - 1)',
     lambda d: (d.get('shift_overhead_default') or {}).get('fp32'), '<=', 0.05),
    ('shift overhead, default engine, bf16 (TSM / TSN - 1)',
     lambda d: (d.get('shift_overhead_default') or {}).get('bf16'), '<=', 0.05),
    ('default predict vs PyTorch eager fp32 (times faster)',
     lambda d: d.get('vs_pytorch_default'), '>=', 5),
    ('one 10 s clip end to end, warm (s)', lambda d: d.get('e2e_latency_s'), '<=', 0.25),
    ('folder time / the slower of decoding (2 workers) and the model alone',
     lambda d: d.get('folder_vs_bound'), '<=', 1.2),
)


def num(x, digits=3):
    return NOT_RUN if x is None else f"{x:.{digits}f}"


def seconds(x):
    return NOT_RUN if x is None else f"{x:.3g}"


def percent(x):
    return NOT_RUN if x is None else f"{x:+.0%}"


def percent_plain(x):
    return NOT_RUN if x is None else f"{x:.1%}"


def times(x):
    return NOT_RUN if x is None else f"{x:.2f}x"


def verdict(value, op, bound):
    if value is None:
        return NOT_RUN
    return 'met' if (value <= bound if op == '<=' else value >= bound) else 'not met'


def default_row(run, row):
    """The row predict.py runs by default: the engine `auto` takes at the default
    precision, in its own formulation."""
    precision = run.get('default_precision')
    return (row['chosen'] and row['precision'] == precision
            and (run.get('default_engine') or {}).get(precision) == row['engine'])


def engine_table(d):
    run = d.get('engines')
    if not run:
        return ['Not run.']
    lines = ['| engine | precision | formulation | TSN s/clip | TSM s/clip | shift overhead '
             '| vs PyTorch |', '|---|---|---|---|---|---|---|']
    for row in run.get('table', []):
        name = ENGINE_NAMES.get(row['engine'], row['engine'])
        mark = ' **(default)**' if default_row(run, row) else ''
        form = row['formulation'] + ('' if row['chosen'] else ' (not the engine\'s own)')
        lines.append(f"| {name}{mark} | {row['precision']} | {form} | {seconds(row['tsn_s'])} | "
                     f"{seconds(row['tsm_s'])} | {percent(row['shift_overhead'])} | "
                     f"{times(row.get('vs_pytorch'))} |")
    torch = run.get('pytorch') or {}
    if 'tsm_s' in torch:
        lines.append(f"| PyTorch {torch.get('version', '')} eager | fp32 | | | "
                     f"{seconds(torch['tsm_s'])} | | 1.00x |")
    else:
        lines.append(f"| PyTorch eager | fp32 | | | {torch.get('skipped', NOT_RUN)} | | |")
    lines += ['', f"Default (predict.py): {run.get('default_precision', NOT_RUN)} on "
              f"{(run.get('default_engine') or {}).get(run.get('default_precision'), NOT_RUN)}; "
              f"`--backend auto` takes " + ', '.join(
                  f"{p}: {e}" for p, e in (run.get('default_engine') or {}).items()) + '.']
    kernels = {p: r[p]['kernels'] for r in (run.get('engines') or {}).values()
               for p in ('fp32', 'bf16') if r.get(p, {}).get('kernels')}
    if kernels:  # which instructions ran (AMX or not): the same VM draws different hosts
        lines += ['', "OpenVINO's convolution kernels (TSN): " + '; '.join(
            f"{p}: {k}" for p, k in kernels.items()) + '.']
    return lines


def e2e_lines(d):
    e = d.get('e2e')
    if not e:
        return ['Not run.']
    clips = 'the real clips' if e.get('clips') == 'realclips' else 'generated clips'
    lines = []
    if e.get('e2e_latency_s') is not None:
        lines.append(f"- One 10 s clip ({e.get('e2e_latency_clip', '?')}, {clips}), warm: "
                     f"{seconds(e['e2e_latency_s'])} s, {times(e.get('e2e_vs_paddlevideo'))} "
                     f"PaddleVideo's {e.get('paddlevideo_ms', 1355)} ms "
                     f"({e.get('engine')}, {e.get('precision')}).")
    else:
        lines.append('- One 10 s clip: not run.')
    if e.get('folder_clips_per_s') is not None:
        lines.append(f"- A folder of {e.get('folder_clips')} clips ({clips}): "
                     f"{num(e['folder_clips_per_s'], 2)} clips/s; decoding alone (2 workers) "
                     f"{num(e.get('decode_only_clips_per_s'), 2)}, the model alone "
                     f"{num(e.get('model_only_clips_per_s'), 2)}; folder_vs_bound "
                     f"{num(e.get('folder_vs_bound'), 2)}, folder_vs_cpu_bound "
                     f"{num(e.get('folder_vs_cpu_bound'), 2)}.")
    else:
        lines.append('- A folder: not run.')
    return lines


def int8_lines(d):
    q = d.get('quantize')
    if not q:
        return ['Not run.']
    lines = [f"- int8 (NNCF, OpenVINO): {seconds(q.get('int8_s_per_clip'))} s/clip, "
             f"{times(q.get('int8_speedup_vs_fp32'))} fp32's speed, "
             f"{times(q.get('int8_speedup_vs_bf16'))} bf16's."]
    real = q.get('realclips') or {}
    if real.get('source') == 'realclips':
        lines.append(f"- int8 top-1 agreement with fp32 on {real.get('clips')} real clips: "
                     f"{percent_plain(real.get('top1_agreement'))} (where fp32's top-2 gap is "
                     f"clear: {percent_plain(real.get('clear_top1_agreement'))}).")
    else:
        lines.append('- int8 top-1 agreement on the real clips: not run (no ../shared/realclips'
                     + (', or --quick' if d.get('quick') else '') + ').')
    demo = q.get('demo')
    lines.append(f"- int8 top-1 agreement with fp32 on the demo's {demo.get('clips')} held-out "
                 f"videos: {percent_plain(demo.get('top1_agreement'))} (accuracy: fp32 "
                 f"{percent_plain(demo.get('fp32_top1'))}, int8 "
                 f"{percent_plain(demo.get('int8_top1'))})." if demo else
                 "- int8 top-1 agreement on the demo's held-out videos: not run (--demo_dir).")
    return lines


def target_lines(d):
    lines = []
    for label, get, op, bound in TARGETS:
        value = get(d)
        lines.append(f"- {label} {op} {bound:g}: {num(value)} — **{verdict(value, op, bound)}**"
                     if value is not None else f"- {label} {op} {bound:g}: **{NOT_RUN}**")
    return lines


def floor_lines(d):
    """'floor' (bench/shift_floor.py): where the default engine's shift overhead comes from."""
    f = d.get('floor')
    if not f:
        return ['Not run.']
    lines = []
    for precision in ('fp32', 'bf16'):
        per = f.get(precision)
        if not per:
            continue
        o, nodes = per['overhead'], per.get('per_node_ms') or {}
        ext = nodes.get('extension') or {}
        tsn_ms = sum((nodes.get('tsn') or {}).values())
        lines.append(
            f"- {precision}: the split export {percent(o.get('split'))}; the same with no "
            f"frame moves (wrong outputs, the layout alone) {percent(o.get('no_moves'))}; the "
            f"shift as an OpenVINO extension (custom op) {percent(o.get('extension'))}, of "
            f"which reorders {ext.get('Reorder', 0):.1f} ms and the op "
            f"{ext.get('Reference', 0):.1f} ms against TSN's {tsn_ms:.1f} ms of nodes.")
    return lines


def machine_line(d):
    m = d.get('machine') or {}
    load = ', '.join(f"{when} {' '.join(f'{x:.2f}' for x in m[f'load_avg_at_{when}'])}"
                     for when in ('start', 'end') if m.get(f'load_avg_at_{when}'))
    return (f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus_available', '?')} cores, "
            f"{m.get('mem_gb', '?')} GB; load average (1, 5, 15 min) {load or '?'}; "
            f"Paddle {m.get('paddle', '?')}, Python {m.get('python', '?')}.")


def render(d):
    """The markdown for a bench/run.py result dict."""
    out = []
    if d.get('quick'):
        out += ['**--quick run: tiny models, the figures mean nothing.**', '']
    out += ['TSN against TSM, one clip (the same weights, shift off), each engine alone in '
            'its process:', '', *engine_table(d), '',
            'Where the shift costs on OpenVINO (TSM over TSN, the same weights):', '',
            *floor_lines(d), '', 'End to end (predict.py):', '',
            *e2e_lines(d), '', 'int8:', '', *int8_lines(d), '', 'Targets (issue 13):', '',
            *target_lines(d), '', machine_line(d), '',
            f"Command: `{d.get('command', NOT_RUN)}`"]
    return '\n'.join(out) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('json', help='the output of bench/run.py --out')
    args = p.parse_args(argv)
    try:
        with open(args.json, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"bench/report.py: cannot read {args.json}: {e}")
    sys.stdout.write(render(data))


if __name__ == '__main__':
    main()
