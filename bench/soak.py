"""bench/serve.py --soak: good and hostile traffic at once against one server, while
the RSS of its process tree (serve.py and its decode workers) is sampled from /proc.

Good clients, for the whole run: two posting real clips to /v1/predict one after
another, one online session sending a JPEG frame every 0.2 s, one GET /healthz a
second.  Hostile ones: bench/hostile.py's three lanes.  The first `warmup` seconds are
not measured; the RSS of the first minute after them (a fifth of the run when shorter)
is the baseline, compared with the last minute's and the run's largest."""
import json
import os
import statistics
import threading
import time
from collections import Counter, defaultdict

import hostile

SAMPLE_EVERY_S = 2


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


def soak(server, token, limits, paths, seconds, warmup):
    """Run the traffic for warmup + seconds against `server` (harness.Served) -> the
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
    """A short table of the run, for docs/serving.md."""
    m, g, h = result['memory'], result['good'], result['hostile']
    rows = [('RSS of the process tree, first minute (mean)', f"{m['first_mean_mb']:.0f} MB"),
            ('last minute (mean) / first minute', f"{m['ratio_last_to_first']:.3f}"),
            ('largest sample / first minute\'s largest', f"{m['ratio_max_to_first_max']:.3f}"),
            *((f'good: {k}', f"{v['ok']} of {v['sent']} answered")
              for k, v in g.items() if k != 'all_answered'),
            *((f'hostile: {k}', ', '.join(f'{o} x{n}' for o, n in sorted(c.items())))
              for k, c in h['by_kind'].items())]
    return '\n'.join(['| | |', '|---|---|', *(f'| {a} | {b} |' for a, b in rows)])
