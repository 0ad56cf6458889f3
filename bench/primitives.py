"""Where the shift's cost goes, in oneDNN primitive time.

    python bench/primitives.py [--quick] --out primitives.json

The exported TSN and TSM programs (split and conv formulations) run interleaved in one
child process with ONEDNN_VERBOSE=1, which logs the execution time of every oneDNN
primitive (convolution, reorder, concat, ...); the cost of a program is the sum over its
primitives of each one's minimum over the rounds, broken down by kind.  A fourth program,
split_without_moves, is the split one with its frame moves left out (wrong outputs, timing
only): it separates what the split layout costs from what the moves cost.  This leaves out
Paddle's per-op dispatch (in the wall-clock figures of bench/inference.py).  It is a
breakdown, not a steadier figure: on this shared machine even the minima of identical
convolutions move by ~5% from run to run, and memory-bound reorders more.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402

MARK = '=====RUN '


def child(prefixes, names, shape, rounds, threads):
    """Run each exported program `rounds` times, interleaved, a marker line before each."""
    from utils.inference import InferenceModel
    runners = [InferenceModel(p, 1, threads) for p in prefixes]
    x = np.random.default_rng(0).standard_normal([1, *shape]).astype('float32')
    for r in runners:  # warm-up: primitives created, weights reordered
        r.run(x)
        r.run(x)
    for _ in range(rounds):
        for name, r in zip(names, runners):
            print(MARK + name, flush=True)
            r.run(x)


def parse(lines):
    """oneDNN verbose lines -> {program: {'total_ms': sum of per-primitive minima,
    'by_kind': {kind: ms}, 'primitives': count}}."""
    runs, cur = collections.defaultdict(list), None
    for ln in lines:
        if ln.startswith(MARK):
            cur = []
            runs[ln[len(MARK):].strip()].append(cur)
        elif cur is not None and ',exec,' in ln:
            f = ln.strip().split(',')
            cur.append((f[5], float(f[-1])))  # primitive kind, milliseconds
    out = {}
    for name, rr in runs.items():
        n = min(len(r) for r in rr)
        by_kind = collections.Counter()
        for i in range(n):
            by_kind[rr[0][i][0]] += min(r[i][1] for r in rr)
        out[name] = {'total_ms': round(sum(by_kind.values()), 3), 'primitives': n,
                     'rounds': len(rr), 'by_kind': {k: round(v, 3) for k, v in by_kind.items()}}
    return out


def main():
    p = common.base_args(__doc__)
    p.add_argument('--child', nargs='+', help=argparse.SUPPRESS)  # name prefix name prefix ...
    args = p.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.quick:
        depth, seg, size, rounds = 18, 4, 32, 3
    else:
        depth, seg, size, rounds = 50, 8, 224, 8
    shape = [seg, 3, size, size]
    if args.child:
        names, prefixes = args.child[0::2], args.child[1::2]
        return child(prefixes, names, shape, rounds, threads)
    from utils.inference import export
    tmp = tempfile.mkdtemp(prefix='tsm_primitives_')
    programs = {'tsn': (0.0, 'slice'), 'tsm_split': (0.125, 'split'), 'tsm_conv': (0.125, 'conv')}
    pairs = []
    for name, (ratio, form) in programs.items():
        model = common.build_tsm(depth, 400, seg, size, ratio)
        pairs += [name, export(model, os.path.join(tmp, name, 'model'), shape, form, 1)]
    # the split layout without its frame moves (timing only): what the layout itself costs;
    # `model` is the last one built above, a TSM
    name = 'tsm_split_without_moves'
    pairs += [name, common.export_split_without_moves(model, os.path.join(tmp, name, 'model'),
                                                      shape)]
    env = dict(os.environ, ONEDNN_VERBOSE='1', GLOG_minloglevel='3')
    cmd = [sys.executable, os.path.abspath(__file__), '--out', os.devnull, '--threads',
           str(threads), '--child', *pairs] + (['--quick'] if args.quick else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.ROOT)
    if res.returncode != 0:
        raise SystemExit(f"child failed ({res.returncode}):\n{res.stderr[-3000:]}")
    costs = parse(res.stdout.splitlines())
    base = costs['tsn']['total_ms']
    result = {'threads': threads, 'depth': depth, 'seg_num': seg, 'size': size,
              'rounds': rounds, 'programs': costs,
              'shift_overhead_primitives': {k[4:]: costs[k]['total_ms'] / base - 1
                                            for k in costs if k.startswith('tsm_')}}
    common.write_json(args.out, result)


if __name__ == '__main__':
    main()
