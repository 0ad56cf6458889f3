"""The server under load (throughput and latency against the number of clients) and under
attack for a while (the soak).

    python bench/serving_load.py [--quick] [--clients 1,2,4,8] [--out FILE] [-- serve.py flags]
    python bench/serving_load.py --soak [SECONDS] [--quick] [-- serve.py flags]

Starts `serve.py` (ResNet-50 TSM, configs/tsm.yaml, seeded random weights with calibrated
BN, whatever engine and precision serve.py picks by default; --quick: the tests' tiny
ResNet-18 on Paddle Inference fp32, the quickest export) on a free loopback port
(testing.served) and posts real clips (../shared/realclips' mp4 files when present, else
generated 10 s clips: common.clips) over HTTP:
  - concurrency_speedup: 8 requests from 8 clients at once against the same 8 one after
    another, in alternating rounds (median of the per-round ratios: the machine's speed
    drifts);
  - per number of clients c: c threads post `requests` clips in all -> requests/s and the
    p50 / p95 latency of one request.
The results go under 'serving'.

--soak (default 300 s, 30 s with --quick): one server with a token and serve.py's limits
(or those given after --), good and hostile traffic at once, while the RSS of its process
tree (serve.py and its decode workers) is sampled from /proc; under 'soak'.  Good clients,
for the whole run: two posting real clips to /v1/predict one after another, one online
session sending a JPEG frame every 0.2 s, one GET /healthz a second.  Hostile ones:
testing/hostile.py's three lanes.  The first `warmup` seconds are not measured; the RSS of
the first minute after them (a fifth of the run when shorter) is the baseline, compared
with the last minute's and the run's largest.
"""
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from testing import hostile  # noqa: E402
from testing.models import build_tsm  # noqa: E402
from testing.served import Served  # noqa: E402
from testing.tiny import tiny_sections, write_config  # noqa: E402

SAMPLE_EVERY_S = 2


def mp4_clips(folder, count, quick, real_folder):
    """`count` clips to post, cycling through the real mp4 files (or generated ones)."""
    paths, _, source = common.clips(folder, 4, quick, real_folder=real_folder)
    if source == 'realclips':
        paths = [p for p in paths if p.endswith('.mp4')]
    else:
        source = 'generated 64x48 1 s' if quick else 'generated 340x256 10 s'
    return [paths[i % len(paths)] for i in range(count)], source


def model_files(folder, quick):
    """(config, weights): random weights saved once."""
    from training import checkpoint
    if quick:
        labels = os.path.join(folder, 'labels.txt')
        with open(labels, 'w') as f:
            f.write('a\nb\nc\n')
        cfg = write_config(os.path.join(folder, 'tiny.yaml'),
                           tiny_sections(kinetics_labels=labels))
        model = build_tsm(18, 3, 4, 32)
    else:
        cfg = os.path.join(common.ROOT, 'configs', 'tsm.yaml')
        model = build_tsm(50, 400, 8, 224)
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


# ---- load: throughput and latency ----

def concurrency_rounds(url, paths, rounds):
    """8 sequential against 8 concurrent requests, alternating -> (ratios, seq, conc, loads)."""
    ratios, seq_s, conc_s, loads = [], [], [], []
    for r in range(rounds):  # alternate the order, round after round
        order = ('seq', 'conc') if r % 2 == 0 else ('conc', 'seq')
        times = {k: load(url, paths, 1 if k == 'seq' else 8)[0] for k in order}
        seq_s.append(times['seq'])
        conc_s.append(times['conc'])
        ratios.append(times['seq'] / times['conc'])
        loads.append(round(os.getloadavg()[0], 2))  # other tenants' share of the cores
        print(f"round {r}: 8 sequential {times['seq']:.2f} s, 8 concurrent "
              f"{times['conc']:.2f} s, ratio {ratios[-1]:.2f}, load {loads[-1]}", flush=True)
    return ratios, seq_s, conc_s, loads


def clients_table(url, paths, clients, requests, quick):
    """Per number of clients: requests/s, p50 / p95 latency, mean batch."""
    table = []
    for c in (int(x) for x in clients.split(',')):
        n = max(requests, c) if not quick else max(4, c)
        wall, lat, batches = load(url, [paths[i % len(paths)] for i in range(n)], c)
        table.append({'clients': c, 'requests': n, 'seconds': round(wall, 3),
                      'throughput_rps': round(n / wall, 3),
                      'p50_s': round(statistics.median(lat), 3),
                      'p95_s': round(percentile(lat, 95), 3),
                      'mean_batch': round(statistics.mean(batches), 2)})
        print(f"{c} clients: {table[-1]['throughput_rps']:.2f} req/s, p50 "
              f"{table[-1]['p50_s']:.3f} s, p95 {table[-1]['p95_s']:.3f} s, mean batch "
              f"{table[-1]['mean_batch']}", flush=True)
    return table


def load_mode(args):
    """The load part of the docstring -> {'serving': figures}."""
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix='tsm-bench-serve-') as folder:
        cfg, weights = model_files(folder, args.quick)
        paths, source = mp4_clips(folder, 8, args.quick, args.clips)
        quick_engine = ['--backend', 'paddle', '--precision', 'fp32'] if args.quick else []
        server = Served(['--config', cfg, '--weights', weights, *quick_engine, *args.serve_args],
                        env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache')}).wait()
        try:
            model = session().get(server.url + '/v1/model').json()
            load(server.url, paths[:2], 1)  # warm: first requests, caches
            ratios, seq_s, conc_s, loads = concurrency_rounds(server.url, paths, rounds)
            table = clients_table(server.url, paths, args.clients, args.requests, args.quick)
        finally:
            server.stop()
    result = {'quick': args.quick,
              'model': {k: model.get(k) for k in ('model_name', 'engine', 'precision',
                                                  'batch_size', 'decode_workers')},
              'protocol': model['protocol']['text'], 'clips': source,
              'concurrency_speedup': round(statistics.median(ratios), 3),
              'concurrency_ratios': [round(x, 3) for x in ratios],
              'sequential_8_s': [round(x, 3) for x in seq_s],
              'concurrent_8_s': [round(x, 3) for x in conc_s], 'load_avg_1min': loads,
              'clients': table}
    print(f"concurrency_speedup (8 concurrent vs 8 sequential): {result['concurrency_speedup']}")
    return {'serving': result}


# ---- soak: good and hostile traffic, the server's memory ----

class Tally:
    """kind -> Counter of outcomes, shared by threads."""

    def __init__(self):
        self.lock, self.counts = threading.Lock(), defaultdict(Counter)

    def add(self, kind, outcomes):
        with self.lock:
            self.counts[kind].update(outcomes)

    def snapshot(self):
        with self.lock:
            return {k: dict(v) for k, v in sorted(self.counts.items())}


# ---- good clients: an outcome 'ok' or why not ----

def predict_client(t, paths, tally, offset):
    s, i = hostile.http(), offset
    while not t.stop.is_set():
        path = paths[i % len(paths)]
        i += 1
        with open(path, 'rb') as f:
            data = f.read()
        try:
            r = s.post(t.url + '/v1/predict', headers=t.auth, timeout=300,
                       files={'video': (os.path.basename(path), data)})
            ok = r.status_code == 200 and len(r.json()['records']) >= 1
            tally.add('predict', ['ok' if ok else f'{r.status_code} {r.text[:120]}'])
        except Exception as e:  # no answer: counted against the server
            tally.add('predict', [f'no answer: {type(e).__name__}'])


def online_client(t, tally):
    """One session for the whole run (reconnecting only after a failure)."""
    from websockets.sync.client import connect
    while not t.stop.is_set():
        try:
            with connect(t.ws_url, additional_headers=t.auth, open_timeout=30) as ws:
                hello = json.loads(ws.recv(30))
                tally.add('online_session', ['ok' if hello.get('ready') else hello.get('error')])
                while hello.get('ready') and not t.stop.is_set():
                    ws.send(t.frame)
                    answer = json.loads(ws.recv(60))
                    tally.add('online_frame', ['ok' if 'frame' in answer else answer.get('error')])
                    time.sleep(0.2)
        except Exception as e:
            tally.add('online_frame', [f'no answer: {type(e).__name__}'])
        t.stop.wait(1)


def health_client(t, tally):
    s = hostile.http()
    while not t.stop.wait(1):
        try:
            r = s.get(t.url + '/healthz', timeout=30)
            tally.add('healthz', ['ok' if r.status_code == 200 else str(r.status_code)])
        except Exception as e:
            tally.add('healthz', [f'no answer: {type(e).__name__}'])


# ---- the server's memory ----

def process_tree(root):
    """root and every process descending from it (from /proc/*/stat)."""
    children = defaultdict(list)
    for d in os.listdir('/proc'):
        try:
            with open(f'/proc/{d}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            children[ppid].append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children[pid])
    return tree


def rss_kb(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith('VmRSS:'))
    except (OSError, StopIteration):
        return 0  # gone, or a zombie


def sample_memory(root, t0, samples, stop):
    while True:
        tree = process_tree(root)
        try:
            fds = len(os.listdir(f'/proc/{root}/fd'))
        except OSError:
            fds = None
        samples.append({'t': round(time.monotonic() - t0, 1), 'processes': len(tree),
                        'rss_mb': round(sum(rss_kb(p) for p in tree) / 1024, 1),
                        'server_rss_mb': round(rss_kb(root) / 1024, 1), 'server_fds': fds,
                        'load_1min': os.getloadavg()[0]})
        if stop.wait(SAMPLE_EVERY_S):
            return


def memory_summary(samples, warmup, seconds):
    """Baseline (the first minute after warm-up) against the last minute and the
    largest sample."""
    window = min(60.0, seconds / 5)
    soak = [s for s in samples if s['t'] >= warmup]
    first = [s['rss_mb'] for s in soak if s['t'] < warmup + window]
    last = [s['rss_mb'] for s in soak if s['t'] >= warmup + seconds - window]
    peak = max(s['rss_mb'] for s in soak)
    out = {'window_s': window, 'first_mean_mb': statistics.mean(first),
           'first_max_mb': max(first), 'last_mean_mb': statistics.mean(last),
           'last_max_mb': max(last), 'max_mb': peak, 'samples': len(soak)}
    out['ratio_last_to_first'] = out['last_mean_mb'] / out['first_mean_mb']
    out['ratio_max_to_first_max'] = peak / out['first_max_mb']
    out['flat_within_10pct'] = max(out['ratio_last_to_first'],
                                   out['ratio_max_to_first_max']) <= 1.10
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def good_summary(counts):
    """kind -> {'sent', 'ok', 'failed': {why: n}}; 'all': every good request answered."""
    out = {}
    for kind in ('predict', 'online_frame', 'online_session', 'healthz'):
        c = counts.get(kind, {})
        out[kind] = {'sent': sum(c.values()), 'ok': c.get('ok', 0),
                     'failed': {k: v for k, v in c.items() if k != 'ok'}}
    out['all_answered'] = all(not v['failed'] for v in out.values())
    return out


def hostile_summary(counts):
    """kind -> outcome counts, and the outcomes not among hostile.EXPECTED's ('stopped':
    the run ended first)."""
    out = {'by_kind': counts, 'unexpected': {}}
    for kind, c in counts.items():
        odd = {k: v for k, v in c.items() if k not in hostile.EXPECTED[kind] | {'stopped'}}
        if odd:
            out['unexpected'][kind] = odd
    out['attacks'] = sum(sum(c.values()) for c in counts.values())
    return out


def start_clients(t, paths, good, bad, samples, server_pid, t0):
    """Every client and the sampler, started -> their threads."""
    jobs = [(sample_memory, server_pid, t0, samples, t.stop),
            (predict_client, t, paths, good, 0), (predict_client, t, paths, good, 1),
            (online_client, t, good), (health_client, t, good)]
    jobs += [(hostile.run_lane, t, attacks, bad) for attacks in hostile.LANES.values()]
    threads = [threading.Thread(target=fn, args=rest, daemon=True) for fn, *rest in jobs]
    for th in threads:
        th.start()
    return threads


def camera_frame(path):
    """A 640x480 JPEG of the clip's first frame: what the page's camera sends."""
    import cv2
    cap = cv2.VideoCapture(path)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"{path}: no frame")
    ok, jpeg = cv2.imencode('.jpg', cv2.resize(bgr, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes()


def soak_traffic(server, token, limits, paths, seconds, warmup):
    """Run the traffic for warmup + seconds against `server` (testing.served.Served) -> the
    result's measured part."""
    stop = threading.Event()
    t = hostile.Target(server.url, token, limits, paths[0], camera_frame(paths[0]), stop)
    good, bad, samples, t0 = Tally(), Tally(), [], time.monotonic()
    fds_before = len(os.listdir(f'/proc/{server.proc.pid}/fd'))
    threads = start_clients(t, paths, good, bad, samples, server.proc.pid, t0)
    while not stop.wait(min(30.0, max(0.1, t0 + warmup + seconds - time.monotonic()))):
        elapsed = time.monotonic() - t0
        print(f"{elapsed:.0f} s: RSS {samples[-1]['rss_mb']} MB, good "
              f"{sum(v.get('ok', 0) for v in good.snapshot().values())} ok, attacks "
              f"{sum(sum(v.values()) for v in bad.snapshot().values())}", flush=True)
        if elapsed >= warmup + seconds:
            stop.set()
    stopping = time.monotonic()
    for th in threads:
        th.join(max(1.0, 120 - (time.monotonic() - stopping)))
    gone = [th.name for th in threads if th.is_alive()]
    after = hostile.http().get(server.url + '/healthz', timeout=30).status_code
    time.sleep(2)  # the server closes its side of the clients' connections
    fds = {'before': fds_before, 'after': len(os.listdir(f'/proc/{server.proc.pid}/fd'))}
    return {'memory': memory_summary(samples, warmup, seconds),
            'good': good_summary(good.snapshot()),
            'hostile': hostile_summary(bad.snapshot()), 'healthz_after': after,
            'server_fds_before_after': fds,
            'clients_still_running_after_stop': gone, 'rss_samples': samples,
            'load_avg_1min': [round(min(s['load_1min'] for s in samples), 2),
                              round(max(s['load_1min'] for s in samples), 2)]}


def markdown(result):
    """A short table of a soak, for docs/serving.md."""
    m, g, h = result['memory'], result['good'], result['hostile']
    rows = [('RSS of the process tree, first minute (mean)', f"{m['first_mean_mb']:.0f} MB"),
            ('last minute (mean) / first minute', f"{m['ratio_last_to_first']:.3f}"),
            ('largest sample / first minute\'s largest', f"{m['ratio_max_to_first_max']:.3f}"),
            *((f'good: {k}', f"{v['ok']} of {v['sent']} answered")
              for k, v in g.items() if k != 'all_answered'),
            *((f'hostile: {k}', ', '.join(f'{o} x{n}' for o, n in sorted(c.items())))
              for k, c in h['by_kind'].items())]
    return '\n'.join(['| | |', '|---|---|', *(f'| {a} | {b} |' for a, b in rows)])


def soak_mode(args):
    """--soak: one server with a token and serve.py's limits (or those given after --)
    -> {'soak': figures}."""
    import secrets
    import serve  # the root's serve.py: its flags and their defaults are the limits
    seconds = args.soak or (30 if args.quick else 300)
    warmup = 10 if args.quick else 30
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix='tsm-bench-soak-') as folder:
        cfg, weights = model_files(folder, args.quick)
        paths, source = mp4_clips(folder, 16, False, args.clips)
        flags = ['--config', cfg, '--weights', weights, '--token', token, *args.serve_args]
        limits = vars(serve.parse_args(flags))
        server = Served(flags, env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache'),
                                    'TMPDIR': folder}).wait()
        try:
            model = session().get(server.url + '/v1/model', headers={
                'Authorization': f'Bearer {token}'}).json()
            result = soak_traffic(server, token, limits, sorted(set(paths)), seconds, warmup)
            result['client_gone'] = gone_count(server.url, token)
        finally:
            t = time.monotonic()
            result_exit = {'exit_code': server.stop(), 'seconds': round(time.monotonic() - t, 1)}
    result.update(quick=args.quick, seconds=seconds, warmup_s=warmup, clips=source,
                  sigterm=result_exit, tracebacks_in_log=server.log.count('Traceback'),
                  model={k: model.get(k) for k in ('model_name', 'engine', 'precision',
                                                   'decode_workers')},
                  limits={k: limits[k] for k in ('max_connections', 'header_timeout',
                                                 'body_timeout', 'send_timeout',
                                                 'ws_idle_timeout', 'max_online', 'max_queue')})
    print(markdown(result))
    m, g = result['memory'], result['good']
    print(f"RSS last/first minute {m['ratio_last_to_first']}, max/first max "
          f"{m['ratio_max_to_first_max']}; every good request answered: {g['all_answered']}")
    return {'soak': result}


def gone_count(url, token):
    """tsm_predict_rejected_total{reason="client_gone"}: requests cancelled as their
    client left."""
    from prometheus_client.parser import text_string_to_metric_families
    text = session().get(url + '/metrics', headers={'Authorization': f'Bearer {token}'}).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == 'tsm_predict_rejected_total'
               and s.labels.get('reason') == 'client_gone')


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--soak', type=float, nargs='?', const=0, metavar='SECONDS',
                   help='good and hostile traffic at once for SECONDS (default 300; 30 with '
                        '--quick) after a warm-up, RSS of the server sampled')
    p.add_argument('--clips', default=common.REALCLIPS,
                   help='a folder of real .mp4 clips (default ../shared/realclips; generated '
                        'clips when it has none)')
    p.add_argument('--clients', default='1,2,4,8')
    p.add_argument('--requests', type=int, default=16, help='requests per client count')
    p.add_argument('--rounds', type=int, default=9, help='rounds of 8 sequential / 8 concurrent')
    p.add_argument('serve_args', nargs='*', help='more serve.py flags (after --)')
    return p.parse_args(argv)


def measure(args):
    """{'soak': ...} with --soak, else {'serving': ...}."""
    return soak_mode(args) if args.soak is not None else load_mode(args)


def main(argv=None):
    args = parse_args(argv)
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
