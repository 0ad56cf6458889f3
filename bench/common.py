"""Shared by the bench scripts: machine info, interleaved timing, the one clip source,
where the results go, the timing-only export.

Each script runs from the root as `python bench/<script>.py` (it puts the root on
sys.path) and writes its figures into bench/results/<date>_<cpu>.json under its part's
name (save); --quick (tiny sizes, a smoke run) writes to a temporary folder instead,
--out FILE to FILE.  bench/report.py renders docs/performance.md from those files."""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# Idle OpenMP threads spin (Intel's runtime: 200 ms after each parallel region) and would
# steal the CPU from whatever runs next in an interleaved loop (PyTorch, the other engine):
# let them sleep.  Set before Paddle or PyTorch is imported.
os.environ.setdefault('KMP_BLOCKTIME', '0')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')  # ../shared, when present
REALCLIPS = os.path.join(SHARED, 'realclips')
RESULTS = os.path.join(ROOT, 'bench', 'results')


def machine_info():
    info = {'python': platform.python_version(), 'platform': platform.platform(),
            'cpus_available': len(os.sched_getaffinity(0)), 'cpu_count': os.cpu_count()}
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            text = f.read()
        info['cpu_model'] = next(ln.split(':', 1)[1].strip() for ln in text.splitlines()
                                 if ln.startswith('model name'))
        flags = next(ln for ln in text.splitlines() if ln.startswith('flags')).split()
        info['cpu_flags'] = sorted(f for f in flags if f.startswith(('avx512', 'amx', 'avx2')))
        with open('/proc/meminfo', encoding='utf-8') as f:
            info['mem_gb'] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
        info['load_avg_at_start'] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    try:
        import paddle
        info['paddle'] = paddle.__version__
    except ImportError:
        pass
    return info


def interleaved(fns, reps, warmup=1, cpu=None):
    """Run every fn of {name: fn} `warmup` times, then `reps` rounds of all of them in turn
    (so load from other processes hits all alike); -> {name: median wall seconds},
    {name: list}.  Pass a dict as `cpu` to get {name: median CPU seconds of this process}
    too (with one thread, CPU time is what other processes' load disturbs least)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
            cpus[k].append(time.process_time() - c)
    if cpu is not None:
        cpu.update({k: statistics.median(v) for k, v in cpus.items()})
    return {k: statistics.median(v) for k, v in times.items()}, times


def paired_ratio(fa, fb, pairs, times=None, settle=0):
    """Median over `pairs` of time(fa) / time(fb), the two run back to back in
    alternating order (ab, ba, ...): a ratio of two calls a fraction of a second apart,
    which the machine's slow drifts in speed (other tenants, clock) touch least.
    -> (median, [ratios]).  Pass a dict as `times` to get {'a': [s], 'b': [s]} too.
    settle: untimed calls of each before its timed one, so that the other's threads
    (an engine's spinning pool) and cache contents are gone, as in a process that runs
    one model only."""
    ratios = []
    runs = times if times is not None else {}
    runs.update(a=[], b=[])
    for i in range(pairs):
        took = {}
        for key, fn in ((('a', fa), ('b', fb)) if i % 2 == 0 else (('b', fb), ('a', fa))):
            for _ in range(settle):
                fn()
            t = time.perf_counter()
            fn()
            took[key] = time.perf_counter() - t
            runs[key].append(took[key])
        ratios.append(took['a'] / took['b'])
    return statistics.median(ratios), ratios


def bracketed(base, fns, rounds):
    """Rounds of `base` X1 `base` X2 ... `base` over the {name: fn} of `fns` (their order
    reversed every other round): each X against the mean of the two base runs either side
    of it, which the machine's drifts in speed touch least.  -> {name: {'ratio': median
    over rounds, 'q1', 'q3': its quartiles, 'median_s'}}, plus 'base' {'median_s'}."""
    names = list(fns)
    times = {k: [] for k in ['base', *names]}
    ratios = {k: [] for k in names}

    def run(key, fn):
        t = time.perf_counter()
        fn()
        times[key].append(time.perf_counter() - t)
        return times[key][-1]

    for i in range(rounds):
        before = run('base', base)
        for k in (names if i % 2 == 0 else names[::-1]):
            took = run(k, fns[k])
            after = run('base', base)
            ratios[k].append(took / ((before + after) / 2))
            before = after
    out = {'base': {'median_s': statistics.median(times['base'])}}
    for k in names:
        q1, _, q3 = statistics.quantiles(ratios[k], n=4) if rounds > 1 else [ratios[k][0]] * 3
        out[k] = {'ratio': statistics.median(ratios[k]), 'q1': q1, 'q3': q3,
                  'median_s': statistics.median(times[k])}
    return out


def set_threads(n):
    """Threads for eager Paddle (OpenMP, MKL, oneDNN); Paddle Inference takes its own."""
    os.environ['OMP_NUM_THREADS'] = str(n)
    import paddle
    core = getattr(getattr(paddle, 'base', None), 'core', None)
    if core is not None and hasattr(core, 'set_num_threads'):
        core.set_num_threads(n)


def run_script(name, args, timeout):
    """Run bench/<name>.py in a fresh process; -> its JSON output (a dict)."""
    fd, out = tempfile.mkstemp(prefix=f'tsm_bench_{name}_', suffix='.json')
    os.close(fd)
    cmd = [sys.executable, os.path.join(ROOT, 'bench', name + '.py'), *args, '--out', out]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"bench/{name}.py failed ({res.returncode}):\n"
                               f"{res.stderr[-3000:]}")
        with open(out, encoding='utf-8') as f:
            return json.load(f)
    finally:
        os.remove(out)


def write_json(path, data):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write('\n')


def cpu_slug(model=None):
    """A short name of the CPU for file names: lscpu's model name, e.g. 'AMD EPYC 7B13'
    -> 'amd-epyc', 'Intel(R) Xeon(R) Platinum 8480+' -> 'intel-xeon'."""
    if model is None:
        model = lscpu_model() or machine_info().get('cpu_model') or 'cpu'
    words = re.sub(r'\(.*?\)|[^a-z0-9 ]', ' ', model.lower()).split()
    return '-'.join(words[:2]) or 'cpu'


def lscpu_model():
    """lscpu's 'Model name', or None."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((ln.split(':', 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith('Model name')), None)


def results_path(quick, day=None):
    """bench/results/<date>_<cpu>.json; --quick: the same name in a temporary folder, so a
    smoke run never lands among the committed results."""
    name = f"{day or datetime.date.today().isoformat()}_{cpu_slug()}.json"
    folder = os.path.join(tempfile.gettempdir(), 'tsm_bench_quick') if quick else RESULTS
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def command_line():
    """This process's command as run from the root: python bench/<script>.py flags."""
    return ' '.join(['python', os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
                     *sys.argv[1:]])


def save(parts, args, command=None):
    """A run's figures, {part: dict}: to --out when given, else into the day's results file
    (--quick: a temporary one), each part beside those other runs put there, with the
    command that made it; -> the path."""
    if getattr(args, 'out', None):
        write_json(args.out, parts)
        return args.out
    path = results_path(args.quick)
    merged = {}
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            merged = json.load(f)
    headlines = {**merged.get('headlines', {}), **parts.get('headlines', {})}
    merged.update(parts)
    if headlines:
        merged['headlines'] = headlines
    merged.setdefault('commands', {}).update(dict.fromkeys(
        (p for p in parts if p != 'headlines'), command or command_line()))
    merged['machine'] = {**merged.get('machine', {}), **machine_info(),
                         'lscpu_model_name': lscpu_model()}
    merged['quick'] = bool(args.quick)
    write_json(path, merged)
    print(f"bench: wrote {', '.join(parts)} into {path}", flush=True)
    return path


def base_args(description):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes: a smoke run (results to a temporary folder)')
    p.add_argument('--out', help='JSON file to write (default: bench/results/<date>_<cpu>.json)')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    return p


def precisions(quick):
    """fp32, and bf16 on CPUs that have it; --quick: fp32 only (a smoke run's code paths
    are the same for both)."""
    from engines.base import cpu_has_bf16
    return ['fp32'] + (['bf16'] if not quick and cpu_has_bf16() else [])


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def manifest_rows(folder=REALCLIPS, edge_cases=False):
    """The rows of folder/MANIFEST.tsv as dicts (path made absolute), edgecases/ (the
    decoder-robustness files: corrupted, 3-frame, rotated) left out unless asked; [] when
    there is no manifest."""
    manifest = os.path.join(folder, 'MANIFEST.tsv')
    if not os.path.isfile(manifest):
        return []
    with open(manifest, encoding='utf-8') as f:
        lines = [ln.split('\t') for ln in f.read().splitlines() if ln.strip()]
    rows = [dict(zip(lines[0], r)) for r in lines[1:]]
    return [dict(r, path=os.path.join(folder, r['path'])) for r in rows
            if edge_cases or not r['path'].startswith('edgecases/')]


def clips(folder, count, quick, real_folder=REALCLIPS, edge_cases=False, size=None,
          seconds=None):
    """The clips every script reads: the real ones of `real_folder` (../shared/realclips,
    its MANIFEST.tsv, else its *.mp4) unless --quick, else `count` generated H.264 mp4
    clips in `folder` (ffmpeg's testsrc2 pattern, a hue each: compressed like a real
    upload; --quick 64x48 for 1 s, else 340x256 for 10 s).  -> (paths, {path: seconds},
    'realclips' or 'generated')."""
    rows = [] if quick else manifest_rows(real_folder, edge_cases)
    if not rows and not quick:
        rows = [{'path': p, 'duration_s': 'nan'}
                for p in sorted(glob.glob(os.path.join(real_folder, '*.mp4')))]
    if rows:
        return ([r['path'] for r in rows],
                {r['path']: float(r['duration_s']) for r in rows}, 'realclips')
    import imageio_ffmpeg
    size = size or ('64x48' if quick else '340x256')
    seconds = seconds or (1 if quick else 10)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f'gen{i}.mp4')
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f',
                        'lavfi', '-i', f'testsrc2=size={size}:rate=25:duration={seconds}',
                        '-vf', f'hue=h={360 * i // count}', '-c:v', 'libx264',
                        '-pix_fmt', 'yuv420p', path], check=True)
        paths.append(path)
    return paths, {p: float(seconds) for p in paths}, 'generated'


def clip_name(path, source):
    """A clip's name in the results: relative to ../shared/realclips, or its file name."""
    return os.path.relpath(path, REALCLIPS) if source == 'realclips' else os.path.basename(path)


_EXPORTS = {}  # (engine, model's build_key, shape, formulation, batch) -> artifact


def export(eng, model, prefix, input_shape, formulation, batch):
    """eng.export (an engines/ module), once per process for a model of
    testing.models.build_tsm (its build_key names its weights): the parts of a --quick run,
    all in one process, share their exports, kept in a folder of their own (a part may
    remove its own).  -> the artifact (at prefix for any other model)."""
    key = getattr(model, 'build_key', None)
    if key is None:
        return eng.export(model, prefix, input_shape, formulation, batch)
    key = (eng.__name__, key, tuple(input_shape), formulation, batch)
    if key not in _EXPORTS:
        folder = tempfile.mkdtemp(prefix='tsm_bench_export_')
        _EXPORTS[key] = eng.export(model, os.path.join(folder, 'model'), input_shape,
                                   formulation, batch)
    return _EXPORTS[key]


def export_split_without_moves(model, prefix, input_shape, export=None):
    """The split export of `model` (one clip per call; `export`: an engine's
    export(model, prefix, input_shape, formulation, batch), default Paddle Inference's)
    with every frame move left out:
    the shifted folds reach the next convolution unmoved.  Wrong outputs, for timing only:
    against TSN it measures what the split layout itself costs (more convolutions, the
    residual-sum copies, the ops' dispatch); against the real split program, what the
    moves cost."""
    import models.shift_conv as shift_conv
    if export is None:
        import engines
        export = engines.engine('paddle').export
    real = shift_conv.moved_folds
    shift_conv.moved_folds = lambda x, folds, seg_num, batch: x  # noqa: E731
    try:  # jit.save traces forward now, so the stand-in is what gets exported
        return export(model, prefix, input_shape, 'split', 1)
    finally:
        shift_conv.moved_folds = real
