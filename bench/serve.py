"""The server under load: throughput and latency against the number of clients.

    python bench/serve.py --out serve.json [--quick] [--clients 1,2,4,8] [-- serve.py flags]
    python bench/serve.py --soak [SECONDS] [--quick] [-- serve.py flags]

Starts `serve.py` (ResNet-50 TSM, configs/tsm.yaml, seeded random weights with calibrated
BN, whatever engine and precision serve.py picks by default; --quick: the tests' tiny
ResNet-18) on a free loopback port and posts real clips (../shared/realclips when present,
else generated 10 s clips) over HTTP:
  - concurrency_speedup: 8 requests from 8 clients at once against the same 8 one after
    another, in alternating rounds (median of the per-round ratios: the machine's speed
    drifts);
  - per number of clients c: c threads post `requests` clips in all -> requests/s and the
    p50 / p95 latency of one request.
--soak (default 300 s, 30 s with --quick; bench/soak.py): good and hostile clients at
once, the RSS of the server's process tree sampled -> bench/results/serve_soak.json.
"""
import argparse
import glob
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from server.harness import Served  # noqa: E402


def clips(folder, count, quick, real_folder=common.REALCLIPS):
    """Real clips when `real_folder` (../shared/realclips) is there, else generated ones."""
    real = sorted(glob.glob(os.path.join(real_folder, '*.mp4')))
    if real and not quick:
        return [real[i % len(real)] for i in range(count)], 'realclips'
    import subprocess
    import imageio_ffmpeg
    size, seconds = ('64x48', 1) if quick else ('340x256', 10)
    out = []
    for i in range(min(count, 4)):
        path = os.path.join(folder, f'gen{i}.mp4')
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f', 'lavfi',
                        '-i', f'testsrc2=size={size}:rate=25:duration={seconds}', '-vf',
                        f'hue=h={90 * i}', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', path],
                       check=True)
        out.append(path)
    return [out[i % len(out)] for i in range(count)], f'generated {size} {seconds} s'


def model_files(folder, quick):
    """(config, weights): random weights saved once."""
    from utils import checkpoint
    if quick:
        import yaml
        from tests.conftest import TINY
        sections = {k: dict(v) for k, v in TINY.items()}
        sections['INFER']['kinetics_labels'] = os.path.join(folder, 'labels.txt')
        with open(sections['INFER']['kinetics_labels'], 'w') as f:
            f.write('a\nb\nc\n')
        cfg = os.path.join(folder, 'tiny.yaml')
        with open(cfg, 'w') as f:
            yaml.safe_dump(sections, f)
        model = common.build_tsm(18, 3, 4, 32)
    else:
        cfg = os.path.join(common.ROOT, 'configs', 'tsm.yaml')
        model = common.build_tsm(50, 400, 8, 224)
    weights = os.path.join(folder, 'bench.pdparams')
    checkpoint.save_weights(model, weights)
    return cfg, weights


def post(session, url, path):
    """-> seconds for one prediction (raises on anything but 200)."""
    with open(path, 'rb') as f:
        data = f.read()
    t = time.perf_counter()
    r = session.post(url + '/v1/predict', files={'video': (os.path.basename(path), data)},
                     timeout=600)
    elapsed = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return elapsed, r.json()['batch_sizes']


def session():
    import requests
    s = requests.Session()
    s.trust_env = False
    return s


def load(url, paths, clients):
    """`clients` threads share the list of paths -> (wall seconds, latencies, batch sizes)."""
    todo = list(paths)
    lock = threading.Lock()
    latencies, batches = [], []

    def worker(_):
        s = session()
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            elapsed, sizes = post(s, url, path)
            with lock:
                latencies.append(elapsed)
                batches.extend(sizes)
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return time.perf_counter() - t, latencies, batches


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny model and clips: a smoke run')
    p.add_argument('--out', help='JSON file to write (--soak: bench/results/serve_soak.json)')
    p.add_argument('--soak', type=float, nargs='?', const=0, metavar='SECONDS',
                   help='good and hostile traffic at once for SECONDS (default 300; 30 with '
                        '--quick) after a warm-up, RSS of the server sampled')
    p.add_argument('--clips', default=common.REALCLIPS,
                   help='a folder of real .mp4 clips (default ../shared/realclips; generated '
                        'clips when it has none)')
    p.add_argument('--clients', default='1,2,4,8')
    p.add_argument('--requests', type=int, default=16, help='requests per client count')
    p.add_argument('--rounds', type=int, default=9, help='rounds of 8 sequential / 8 concurrent')
    p.add_argument('--threads', type=int, default=0, help='ignored (bench/run.py passes it)')
    p.add_argument('serve_args', nargs='*', help='more serve.py flags (after --)')
    args = p.parse_args(argv)
    if args.soak is not None:
        return soak_main(args, argv)
    if not args.out:
        p.error('--out is required')
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix='tsm-bench-serve-') as folder:
        cfg, weights = model_files(folder, args.quick)
        paths, source = clips(folder, 8, args.quick, args.clips)
        server = Served(['--config', cfg, '--weights', weights, *args.serve_args],
                        env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache')}).wait()
        try:
            model = session().get(server.url + '/v1/model').json()
            load(server.url, paths[:2], 1)  # warm: first requests, caches
            ratios, seq_s, conc_s, loads = [], [], [], []
            for r in range(rounds):  # alternate the order, round after round
                order = ('seq', 'conc') if r % 2 == 0 else ('conc', 'seq')
                times = {k: load(server.url, paths, 1 if k == 'seq' else 8)[0] for k in order}
                seq_s.append(times['seq'])
                conc_s.append(times['conc'])
                ratios.append(times['seq'] / times['conc'])
                loads.append(round(os.getloadavg()[0], 2))  # other tenants' share of the cores
                print(f"round {r}: 8 sequential {times['seq']:.2f} s, 8 concurrent "
                      f"{times['conc']:.2f} s, ratio {ratios[-1]:.2f}, load {loads[-1]}",
                      flush=True)
            table = []
            for c in (int(x) for x in args.clients.split(',')):
                n = max(args.requests, c) if not args.quick else max(4, c)
                wall, lat, batches = load(server.url, [paths[i % len(paths)] for i in range(n)], c)
                table.append({'clients': c, 'requests': n, 'seconds': round(wall, 3),
                              'throughput_rps': round(n / wall, 3),
                              'p50_s': round(statistics.median(lat), 3),
                              'p95_s': round(percentile(lat, 95), 3),
                              'mean_batch': round(statistics.mean(batches), 2)})
                print(f"{c} clients: {table[-1]['throughput_rps']:.2f} req/s, p50 "
                      f"{table[-1]['p50_s']:.3f} s, p95 {table[-1]['p95_s']:.3f} s, mean batch "
                      f"{table[-1]['mean_batch']}", flush=True)
        finally:
            server.stop()
    result = {'machine': common.machine_info(), 'quick': args.quick,
              'model': {k: model.get(k) for k in ('model_name', 'engine', 'precision',
                                                  'batch_size', 'decode_workers')},
              'protocol': model['protocol']['text'], 'clips': source,
              'concurrency_speedup': round(statistics.median(ratios), 3),
              'concurrency_ratios': [round(x, 3) for x in ratios],
              'sequential_8_s': [round(x, 3) for x in seq_s],
              'concurrent_8_s': [round(x, 3) for x in conc_s], 'load_avg_1min': loads,
              'clients': table,
              'command': ' '.join(['python', 'bench/serve.py'] + (argv or sys.argv[1:]))}
    common.write_json(args.out, result)
    print(f"concurrency_speedup (8 concurrent vs 8 sequential): {result['concurrency_speedup']}")


def soak_main(args, argv):
    """--soak: one server with a token and serve.py's limits (or those given after --)."""
    import secrets
    import serve  # the root's serve.py: common put the root first on sys.path
    import soak
    seconds = args.soak or (30 if args.quick else 300)
    warmup = 10 if args.quick else 30
    out = args.out or os.path.join(common.ROOT, 'bench', 'results', 'serve_soak.json')
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix='tsm-bench-soak-') as folder:
        cfg, weights = model_files(folder, args.quick)
        paths, source = clips(folder, 16, False, args.clips)
        flags = ['--config', cfg, '--weights', weights, '--token', token, *args.serve_args]
        limits = vars(serve.parse_args(flags))
        server = Served(flags, env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache'),
                                    'TMPDIR': folder}).wait()
        try:
            model = session().get(server.url + '/v1/model', headers={
                'Authorization': f'Bearer {token}'}).json()
            result = soak.soak(server, token, limits, sorted(set(paths)), seconds, warmup)
            result['client_gone'] = gone_count(server.url, token)
        finally:
            t = time.monotonic()
            result_exit = {'exit_code': server.stop(), 'seconds': round(time.monotonic() - t, 1)}
    result.update(machine=common.machine_info(), quick=args.quick, seconds=seconds,
                  warmup_s=warmup, clips=source, sigterm=result_exit,
                  tracebacks_in_log=server.log.count('Traceback'),
                  model={k: model.get(k) for k in ('model_name', 'engine', 'precision',
                                                   'decode_workers')},
                  limits={k: limits[k] for k in ('max_connections', 'header_timeout',
                                                 'body_timeout', 'send_timeout',
                                                 'ws_idle_timeout', 'max_online', 'max_queue')},
                  command=' '.join(['python', 'bench/serve.py'] + (argv or sys.argv[1:])))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    common.write_json(out, result)
    print(soak.markdown(result))
    m, g = result['memory'], result['good']
    print(f"RSS last/first minute {m['ratio_last_to_first']}, max/first max "
          f"{m['ratio_max_to_first_max']}; every good request answered: {g['all_answered']}")


def gone_count(url, token):
    """tsm_predict_rejected_total{reason="client_gone"}: requests cancelled as their
    client left."""
    from prometheus_client.parser import text_string_to_metric_families
    text = session().get(url + '/metrics', headers={'Authorization': f'Bearer {token}'}).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == 'tsm_predict_rejected_total'
               and s.labels.get('reason') == 'client_gone')


if __name__ == '__main__':
    main()
