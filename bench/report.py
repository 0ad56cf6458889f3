"""docs/performance.md from the results files: the method notes of
bench/performance_template.md, then every run in bench/results/<date>_<cpu>.json, the
newest first, in markdown.

    python bench/report.py                     # writes docs/performance.md
    python bench/report.py FILE.json --stdout  # one results file, to stdout

Each results file is rendered part by part (bench/run.py's parts): the engine x precision
x {TSN, TSM} table ('engines'), where OpenVINO's shift overhead comes from ('floor'), the
end-to-end and int8 lines ('e2e', 'int8'), the issue's targets each met or not met, the
headline figures of every other part, the machine and the commands.  Only what the file
holds: a part it lacks reads "not run".
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from bench.run import HEADLINE  # noqa: E402
from bench.shift_cost import default_row  # noqa: E402

TEMPLATE = os.path.join(common.ROOT, 'bench', 'performance_template.md')
OUT = os.path.join(common.ROOT, 'docs', 'performance.md')
MARKER = '{{runs}}'
NOT_RUN = 'not run'
ENGINE_NAMES = {'paddle': 'Paddle Inference + oneDNN', 'openvino': 'OpenVINO',
                'onnxruntime': 'ONNX Runtime'}
# label, how the figure is found in a results file, comparison, bound
TARGETS = (
    ('shift overhead, default engine, fp32 (TSM / TSN - 1)',
     lambda d: (part(d, 'engines').get('shift_overhead_default') or {}).get('fp32'), '<=', 0.05),
    ('shift overhead, default engine, bf16 (TSM / TSN - 1)',
     lambda d: (part(d, 'engines').get('shift_overhead_default') or {}).get('bf16'), '<=', 0.05),
    ('default predict vs PyTorch eager fp32 (times faster)',
     lambda d: part(d, 'engines').get('vs_pytorch_default'), '>=', 5),
    ('one 10 s clip end to end, warm (s)', lambda d: part(d, 'e2e').get('e2e_latency_s'),
     '<=', 0.25),
    ('folder time / the slower of decoding (2 workers) and the model alone',
     lambda d: part(d, 'e2e').get('folder_vs_bound'), '<=', 1.2),
)
RENDERED = ('engines', 'floor', 'e2e', 'int8')  # by their own functions; the rest: headlines
MORE = {'crowded': ('times_s',), 'pair': ('overhead_breakdown',)}  # beside the headlines


def part(d, name):
    return d.get(name) or {}


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


def engine_rows(run):
    """The engines table's rows, PyTorch's last."""
    lines = []
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
    return lines


def engine_table(d):
    run = d.get('engines')
    if not run:
        return ['Not run.']
    lines = ['| engine | precision | formulation | TSN s/clip | TSM s/clip | shift overhead '
             '| vs PyTorch |', '|---|---|---|---|---|---|---|', *engine_rows(run)]
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
    q = d.get('int8')
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
    """'floor' (shift_cost.py --mode floor): where the default engine's shift overhead
    comes from."""
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


def figure(value):
    """A headline figure in a line of text: numbers rounded, dicts as key value pairs."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ', '.join(f"{k} {figure(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ' '.join(figure(v) for v in value)
    return str(value)


def other_parts(d):
    """The headline figures of every part without a renderer of its own."""
    lines = []
    for name in HEADLINE:
        if name in RENDERED or not d.get(name):
            continue
        keys = HEADLINE[name] + MORE.get(name, ())
        heads = [f"{k} {figure(v)}" for k, v in d[name].items() if k in keys and v is not None]
        if name == 'online':
            heads = [f"{k} {figure(v)}" for k, v in (d[name].get('targets') or {}).items()
                     if k in ('mobilenetv2_frame_ms', 'resnet50_frame_vs_clip',
                              'browser_answers_per_s', 'met')]
        lines.append(f"- {name}: " + ('; '.join(heads) or 'no headline figure') + '.')
    return lines or ['None.']


def machine_line(d):
    m = d.get('machine') or {}
    load = ', '.join(f"{when} {' '.join(f'{x:.2f}' for x in m[f'load_avg_at_{when}'])}"
                     for when in ('start', 'end') if m.get(f'load_avg_at_{when}'))
    return (f"Machine: {m.get('lscpu_model_name') or m.get('cpu_model', '?')}, "
            f"{m.get('cpus_available', '?')} cores, {m.get('mem_gb', '?')} GB; load average "
            f"(1, 5, 15 min) {load or '?'}; Paddle {m.get('paddle', '?')}, "
            f"Python {m.get('python', '?')}.")


def command_lines(d):
    commands = sorted(set((d.get('commands') or {}).values()))
    return [f"Commands: {', '.join(f'`{c}`' for c in commands) or NOT_RUN}."]


def render(d):
    """The markdown for one results file's dict."""
    out = []
    if d.get('quick'):
        out += ['**--quick run: tiny models, the figures mean nothing.**', '']
    if d.get('note'):
        out += [d['note'], '']
    if d.get('ranges'):
        out += ['Ranges over runs:', '', *(f"- {k}: {v}" for k, v in d['ranges'].items()), '']
    out += ['TSN against TSM, one clip (the same weights, shift off), each engine alone in '
            'its process:', '', *engine_table(d), '',
            'Where the shift costs on OpenVINO (TSM over TSN, the same weights):', '',
            *floor_lines(d), '', 'End to end (predict.py):', '',
            *e2e_lines(d), '', 'int8:', '', *int8_lines(d), '', 'Targets (issue 13):', '',
            *target_lines(d), '', 'The other parts (headline figures):', '', *other_parts(d),
            '', machine_line(d), '', *command_lines(d)]
    return '\n'.join(out) + '\n'


def results_files(folder=common.RESULTS):
    """bench/results/<date>_<cpu>.json, the newest first."""
    return sorted(glob.glob(os.path.join(folder, '*_*.json')), reverse=True)


def load(path):
    """A results file's dict; a one-line error naming the file when it cannot be read."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"bench/report.py: cannot read {path}: {e}")
    if not isinstance(data, dict):
        sys.exit(f"bench/report.py: {path}: not a results file (a JSON object)")
    return data


def page(paths, template=TEMPLATE):
    """docs/performance.md: the template, its {{runs}} replaced by every file's section."""
    with open(template, encoding='utf-8') as f:
        text = f.read()
    runs = []
    for path in paths:
        date, cpu = os.path.splitext(os.path.basename(path))[0].split('_', 1)
        runs += [f"### {date}, {cpu}", '', render(load(path)).rstrip(), '']
    return text.replace(MARKER, '\n'.join(runs).rstrip() + '\n')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('files', nargs='*', help='results files (default: bench/results/*.json)')
    p.add_argument('--stdout', action='store_true', help='print the runs, write nothing')
    p.add_argument('--out', default=OUT, help='the page to write (default docs/performance.md)')
    args = p.parse_args(argv)
    paths = args.files or results_files()
    if args.stdout:
        sys.stdout.write(''.join(render(load(path)) for path in paths))
        return
    text = page(paths)
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    print(f"wrote {args.out} from {len(paths)} results file(s)")


if __name__ == '__main__':
    main()
