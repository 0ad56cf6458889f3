"""Shared by the bench scripts: machine info, interleaved timing, the models they time."""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# Idle OpenMP threads spin (Intel's runtime: 200 ms after each parallel region) and would
# steal the CPU from whatever runs next in an interleaved loop (PyTorch, the other engine):
# let them sleep.  Set before Paddle or PyTorch is imported.
os.environ.setdefault('KMP_BLOCKTIME', '0')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')  # ../shared, when present
REALCLIPS = os.path.join(SHARED, 'realclips')


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


def calibrate_bn(model, x):
    """Random weights make activations grow block after block; set every BN's running
    statistics to those of its input on `x` (one eval-mode forward), so that features and
    logits have a trained network's scale.  Deterministic for a given x."""
    import paddle
    hooks = []

    def pre(layer, inputs):
        v = inputs[0]
        layer._mean.set_value(v.mean(axis=[0, 2, 3]))
        layer._variance.set_value(v.var(axis=[0, 2, 3], unbiased=False))

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            hooks.append(layer.register_forward_pre_hook(pre))
    model.eval()
    with paddle.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return model


def build_tsm(depth, num_classes, seg_num, size, shift_ratio=0.125, seed=0):
    """A TSM (shift_ratio 0: TSN) with random weights, BN calibrated on a random clip."""
    import paddle
    from models.tsm import TSM
    paddle.seed(seed)
    model = TSM(num_classes=num_classes, seg_num=seg_num, num_layers=depth,
                shift_ratio=shift_ratio)
    calibrate_bn(model, paddle.randn([1, seg_num, 3, size, size]))
    return model


def set_threads(n):
    """Threads for eager Paddle (OpenMP, MKL, oneDNN); Paddle Inference takes its own."""
    os.environ['OMP_NUM_THREADS'] = str(n)
    import paddle
    core = getattr(getattr(paddle, 'base', None), 'core', None)
    if core is not None and hasattr(core, 'set_num_threads'):
        core.set_num_threads(n)


def run_script(name, args, timeout):
    """Run bench/<name>.py in a fresh process; -> its JSON output (a dict)."""
    out = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'tsm_bench_{os.getpid()}_{name}.json')
    cmd = [sys.executable, os.path.join(ROOT, 'bench', name + '.py'), *args, '--out', out]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"bench/{name}.py failed ({res.returncode}):\n{res.stderr[-3000:]}")
    with open(out, encoding='utf-8') as f:
        data = json.load(f)
    os.remove(out)
    return data


def write_json(path, data):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write('\n')


def base_args(description):
    import argparse
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--quick', action='store_true', help='tiny sizes: a smoke run')
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    return p


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
        from utils.inference import export
    real = shift_conv.moved_folds
    shift_conv.moved_folds = lambda x, folds, seg_num, batch: x  # noqa: E731
    try:  # jit.save traces forward now, so the stand-in is what gets exported
        return export(model, prefix, input_shape, 'split', 1)
    finally:
        shift_conv.moved_folds = real
