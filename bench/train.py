"""Training step throughput (clips/s) and peak memory (RSS) of TSM and TSN on the CPU,
each in a process of its own.  Random data, Momentum, cross-entropy, eager float32.

    python bench/train.py [--quick] --out train.json
"""
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def one(kind, quick, threads):
    """Time training steps of one model in this process; -> dict."""
    common.set_threads(threads)
    import numpy as np
    import paddle
    import paddle.nn.functional as F
    paddle.set_device('cpu')
    from models.tsm import TSM
    depth, seg, size, batch, steps = (18, 4, 32, 2, 2) if quick else (50, 8, 224, 2, 3)
    paddle.seed(0)
    model = TSM(num_classes=400, seg_num=seg, num_layers=depth,
                shift_ratio=0.125 if kind == 'tsm' else 0.0)
    model.train()
    opt = paddle.optimizer.Momentum(0.001, momentum=0.9, parameters=model.parameters())
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, seg, 3, size, size)).astype('float32'))
    y = paddle.to_tensor(rng.integers(0, 400, (batch, 1)).astype('int64'))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {'clips_per_s': batch / float(np.median(times)), 'step_s': float(np.median(times)),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'rss_before_training_mb': rss_before, 'batch': batch, 'depth': depth,
            'seg_num': seg, 'size': size, 'threads': threads}


def main():
    p = common.base_args(__doc__)
    p.add_argument('--model', choices=('tsm', 'tsn'), default=None, help='internal: one model')
    args = p.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.model:
        common.write_json(args.out, one(args.model, args.quick, threads))
        return
    res = {}
    for kind in ('tsm', 'tsn'):
        if args.quick:  # one process for both: the peak memory is then the larger one's
            r = one(kind, True, threads)
        else:
            out = f"{args.out}.{kind}.json"
            cmd = [sys.executable, os.path.abspath(__file__), '--model', kind, '--out', out,
                   '--threads', str(threads)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            with open(out, encoding='utf-8') as f:
                r = json.load(f)
            os.remove(out)
        res[kind] = r
        res[f'train_step_clips_per_s_{kind}'] = r['clips_per_s']
        res[f'train_peak_mem_mb_{kind}'] = r['peak_rss_mb']
    res['train_step_clips_per_s'] = {k: res[f'train_step_clips_per_s_{k}'] for k in ('tsm', 'tsn')}
    res['train_peak_mem_mb'] = {k: res[f'train_peak_mem_mb_{k}'] for k in ('tsm', 'tsn')}
    common.write_json(args.out, res)


if __name__ == '__main__':
    main()
