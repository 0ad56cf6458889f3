"""The server's app in this process: uvicorn on a free loopback port, in a thread, over the
tiny eager model and stand-in decoders (tests/decode_faults.py; an upload is a clip saved
by np.save).  States a real server reaches only by chance are made here on purpose: clips
held until they meet in the batcher, a decode held in flight, a decode worker that dies at
a chosen step, a route that raises; and serve.py's --host / --insecure checks, in process."""
import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import paddle
import pytest

from server.decode import DecodePool
from server.service import Service
from tests import decode_faults
from testing.tiny import tiny_sections, write_config
from tests.test_server import http, json_error, metric, post, wait_for

NAMES = ['red', 'green', 'blue']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tiny config, a seeded eager model and 8 random clips saved as uploads."""
    from models import get_model
    from utils.config_utils import parse_config
    d = tmp_path_factory.mktemp('app')
    cfg = parse_config(write_config(d / 'tiny.yaml', tiny_sections()))
    paddle.seed(1)
    model = get_model('TSM', cfg, 'infer')
    rng = np.random.default_rng(0)
    m = cfg.MODEL
    shape = (m.seg_num, 3 * m.seglen, cfg.INFER.target_size, cfg.INFER.target_size)
    clips = []
    for i in range(8):
        clips.append(str(d / f'clip{i}.npy'))
        np.save(clips[-1], rng.standard_normal(shape).astype(np.float32))  # [T, 3L, S, S]
    return {'dir': d, 'cfg': cfg, 'config': str(d / 'tiny.yaml'), 'model': model, 'clips': clips}


def eager_probs(tiny, path):
    """Class probabilities of the eager model on the saved clip at `path`."""
    with paddle.no_grad():
        logits = tiny['model'](paddle.to_tensor(np.load(path)[None])).numpy()[0]
    p = np.exp(logits.astype(np.float64) - logits.max())
    return p / p.sum()


class TinyService(Service):
    """Service's answers (probabilities, record, describe) over the eager tiny model, made
    without loading weights or an engine.  `gate`: a threading.Event each model call waits
    for; `broken`: record() raises, as a bug in a route would."""

    def __init__(self, tiny):
        self.cfg, self.net, self.names = tiny['cfg'], tiny['model'], NAMES
        self.model_name, self.options, self.online = 'TSM', tiny['model'].options(), None
        self.engine = {'engine': 'eager', 'precision': 'fp32'}
        self.weights, self.config_file = {'file': 'w.pdparams', 'sha256': ''}, 'tiny.yaml'
        self.gate, self.calls, self.broken = None, [], False

    def probabilities(self, clips):
        self.calls.append(len(clips))
        if self.gate is not None:
            assert self.gate.wait(60), 'the test never released the model'
        return super().probabilities(clips)

    def record(self, probs, topk):
        if self.broken:
            raise RuntimeError('a bug near /srv/secret')
        return super().record(probs, topk)


class LoopPool:
    """DecodePool's interface, decoding in the event loop with decode_faults.work; a call
    waits while `open` is clear."""
    workers = 1

    def __init__(self, cfg):
        self.cfg, self.on_restart, self.open = cfg, None, threading.Event()
        self.open.set()

    async def call(self, fn, path, *args):
        while not self.open.is_set():
            await asyncio.sleep(0.01)
        return decode_faults.work(fn.__name__, None, None, path, *args)

    def close(self):
        pass


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class FaultyPool(DecodePool):
    """The real DecodePool (its restarts and retries) over spawned workers that run
    decode_faults.work without Paddle.  `faults`: {sha256 of an upload: {stage: action}};
    `gate`: the file a 'hold' waits for."""

    def __init__(self, cfg, workers):
        self.faults, self.gate = {}, None
        super().__init__(cfg, workers)

    def _executor(self):
        from utils.parent_watch import die_with_parent
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context('spawn'),
                                   initializer=die_with_parent)

    async def call(self, fn, path, *args):
        action = self.faults.get(sha256(path), {}).get(fn.__name__)
        return await super().call(decode_faults.work, fn.__name__, action, self.gate, path, *args)


@contextlib.contextmanager
def serving(service, pool, **settings):
    """create_app(service, pool, Settings(**settings)) under uvicorn on 127.0.0.1, in a
    thread of this process -> (url, app)."""
    import uvicorn
    from server.app import Settings, create_app
    from server.main import listen
    from server.transport import Limits, uvicorn_config
    app = create_app(service, pool, Settings(**settings))
    sock = listen('127.0.0.1', 0, 30)
    server = uvicorn.Server(uvicorn_config(app, Limits()))
    thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 'the server to start')
        assert server.started
        yield f'http://127.0.0.1:{sock.getsockname()[1]}', app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def rejected(url):
    """{reason: count} of tsm_predict_rejected_total."""
    from prometheus_client.parser import text_string_to_metric_families
    return {s.labels['reason']: s.value
            for f in text_string_to_metric_families(http().get(url + '/metrics').text)
            for s in f.samples if s.name == 'tsm_predict_rejected_total'}


def counted_once(url, reason, before):
    after = rejected(url)
    assert after == {**before, reason: before.get(reason, 0) + 1}, (reason, before, after)


# ---- micro-batching ----

def test_clips_that_wait_together_share_model_calls(tiny):
    """8 requests whose clips all reach the batcher while the model is busy: the batcher
    takes them INFER.batch_size (2) at a time, and each request gets the answer of its own
    clip, the one it gets alone."""
    service = TinyService(tiny)
    with serving(service, LoopPool(tiny['cfg'])) as (url, _):
        alone = [post(url, p, fields={'topk': '3'}).json() for p in tiny['clips']]
        assert [a['batch_sizes'] for a in alone] == [[1]] * 8
        windows = metric(url, 'tsm_decoded_windows_total')
        service.gate, service.calls = threading.Event(), []
        with ThreadPoolExecutor(8) as threads:
            answers = [threads.submit(post, url, p, fields={'topk': '3'}) for p in tiny['clips']]
            # every clip is in the batcher's queue (or in the model call that waits)
            wait_for(lambda: metric(url, 'tsm_decoded_windows_total') == windows + 8,
                     'every clip to reach the batcher')
            service.gate.set()
            answers = [a.result() for a in answers]
    assert sum(service.calls) == 8 and sorted(service.calls)[-3:] == [2, 2, 2], service.calls
    assert sum(a.json()['batch_sizes'] == [2] for a in answers) >= 6
    for path, single, r in zip(tiny['clips'], alone, answers):
        assert r.status_code == 200, r.text
        rec, expected = r.json()['records'][0], eager_probs(tiny, path)
        assert rec['top_indices'] == single['records'][0]['top_indices']
        assert rec['top_indices'] == list(np.argsort(-expected))
        np.testing.assert_allclose(rec['top_probs'], expected[rec['top_indices']], atol=1e-5)


# ---- refusals and errors ----

def multipart_post(url, **kwargs):
    return http().post(url + '/v1/predict', timeout=60, **kwargs)


class Answer:
    """What json_error reads of an answer received by hand."""

    def __init__(self, raw):
        import json
        head, body = raw.split(b'\r\n\r\n', 1)
        self.status_code, self.text = int(head.split(b' ', 2)[1]), body.decode()
        self.json = lambda: json.loads(body)


def declared_over_the_limit(url):
    """Headers that declare 10 MB, and no body (refused before any of it is read)."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/'
                     b'form-data; boundary=b0\r\nContent-Length: 10000000\r\n\r\n'
                     % u.netloc.encode())
        raw = b''
        while more := sock.recv(65536):
            raw += more
    return Answer(raw)


def test_each_refusal_is_counted_once_under_its_reason(tiny, tmp_path):
    """tsm_predict_rejected_total{reason}: one more for each refused request, under its
    reason only (client_gone: test_a_client_that_leaves_is_counted_once)."""
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(b'not a clip\n' * 50)
    clip = tiny['clips'][0]
    pool = LoopPool(tiny['cfg'])
    cases = {
        '415': (lambda url: multipart_post(url, data=b'{}', headers={'Content-Type':
                                                                    'application/json'}), 415),
        '413': (declared_over_the_limit, 413),
        '400': (lambda url: multipart_post(url, files=[('video', ('a.mp4', b'1')),
                                                       ('video', ('b.mp4', b'2'))]), 400),
        '422': (lambda url: multipart_post(url, files={'other': ('a.mp4', b'xx')}), 422),
        'undecodable': (lambda url: post(url, str(garbage)), 422),
    }
    with serving(TinyService(tiny), pool, max_queue=1, max_upload_mb=0.1) as (url, _):
        for reason, (send, status) in cases.items():
            before = rejected(url)
            json_error(send(url), status)
            counted_once(url, reason, before)
        pool.open.clear()  # the next request stays in its decode, holding the one slot
        with ThreadPoolExecutor(1) as threads:
            held = threads.submit(post, url, clip)
            wait_for(lambda: metric(url, 'tsm_predict_in_flight') == 1, 'a request in flight')
            before = rejected(url)
            busy = post(url, clip)
            assert 'busy' in json_error(busy, 503) and busy.headers['retry-after'] == '1'
            counted_once(url, 'queue_full', before)
            pool.open.set()
            assert held.result().status_code == 200
        assert post(url, clip).status_code == 200


def test_a_client_that_leaves_is_counted_once(tiny):
    """A client that closes its connection while its decode is in flight: client_gone,
    once; the slot comes free."""
    clip = open(tiny['clips'][0], 'rb').read()
    body = (b'--b0\r\nContent-Disposition: form-data; name="video"; filename="c.mp4"\r\n'
            b'Content-Type: video/mp4\r\n\r\n' + clip + b'\r\n--b0--\r\n')
    pool = LoopPool(tiny['cfg'])
    with serving(TinyService(tiny), pool, max_queue=1) as (url, _):
        u = urlparse(url)
        before = rejected(url)
        pool.open.clear()
        with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
            sock.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/'
                         b'form-data; boundary=b0\r\nContent-Length: %d\r\n\r\n%s'
                         % (u.netloc.encode(), len(body), body))
            wait_for(lambda: metric(url, 'tsm_predict_in_flight') == 1, 'the upload in flight')
        wait_for(lambda: rejected(url).get('client_gone', 0) > before.get('client_gone', 0),
                 'the server to see the client go')
        counted_once(url, 'client_gone', before)
        pool.open.set()
        assert metric(url, 'tsm_predict_in_flight') == 0
        assert post(url, tiny['clips'][0]).status_code == 200


def test_an_unexpected_error_is_a_500_with_its_traceback_only_in_the_log(tiny, caplog):
    service = TinyService(tiny)
    with serving(service, LoopPool(tiny['cfg'])) as (url, _):
        service.broken = True
        with caplog.at_level(logging.ERROR, logger='server.app'):
            r = post(url, tiny['clips'][0])
        assert json_error(r, 500) == 'internal error (see the server log)'
        assert 'secret' not in r.text and 'RuntimeError' not in r.text
        (logged,) = [rec for rec in caplog.records if rec.name == 'server.app']
        assert logged.getMessage() == 'internal error on /v1/predict'
        assert logged.exc_info[0] is RuntimeError and 'a bug near /srv/secret' in caplog.text
        assert metric(url, 'tsm_http_requests_total', route='/v1/predict', status='500') == 1
        service.broken = False
        assert post(url, tiny['clips'][0]).status_code == 200
        assert metric(url, 'tsm_predict_in_flight') == 0


# ---- a decode worker that dies ----

@pytest.fixture(scope='module')
def faulty(tiny):
    """A server over FaultyPool, 2 workers."""
    pool = FaultyPool(tiny['cfg'], 2)
    with serving(TinyService(tiny), pool) as (url, _):
        yield url, pool


def restarts(url):
    return metric(url, 'tsm_decoder_restarts_total')


def test_a_worker_that_dies_while_idle_costs_no_request(tiny, faulty):
    """Killed between requests: the next request finds the pool broken, the pool starts
    afresh (one restart) and the request is answered."""
    url, pool = faulty
    assert post(url, tiny['clips'][0]).status_code == 200
    before = restarts(url)
    workers = list(pool.pool._processes)
    assert workers
    for pid in workers:
        os.kill(pid, 9)
    r = post(url, tiny['clips'][1], fields={'topk': '3'})
    assert r.status_code == 200, r.text
    expected = eager_probs(tiny, tiny['clips'][1])
    assert r.json()['records'][0]['top_indices'] == list(np.argsort(-expected))
    assert restarts(url) == before + 1 and pool.restarts == before + 1


@pytest.mark.parametrize('stage, action', [('probe_upload', 'segfault'),
                                           ('decode_windows', 'segfault'),
                                           ('decode_windows', 'hang')])
def test_a_clip_that_kills_its_worker_costs_only_itself(tiny, faulty, tmp_path, stage, action):
    """An upload whose decode kills its worker (a segfault in the probe or in a chunk of
    windows, or a decoder stuck in C code that the watchdog ends) while another request
    is in flight in the other worker: it gets a 422, after one retry on a fresh pool (two
    restarts); the other request, whose retry is in flight until it has a worker, gets
    its answer."""
    url, pool = faulty
    innocent, poison = tiny['clips'][6], tiny['clips'][7]
    pool.gate = gate = str(tmp_path / 'gate')
    pool.faults = {sha256(innocent): {'probe_upload': 'hold'}, sha256(poison): {stage: action}}
    before = restarts(url)
    try:
        with ThreadPoolExecutor(2) as threads:
            held = threads.submit(post, url, innocent, fields={'topk': '3'})
            wait_for(lambda: os.path.exists(gate + '.held.1'), 'the other request in a worker')
            killer = threads.submit(post, url, poison)
            wait_for(lambda: restarts(url) > before, 'the first crash', timeout=30)
            open(gate + '.1', 'w').close()
            wait_for(lambda: os.path.exists(gate + '.held.2'), "the other request's retry")
            open(gate + '.2', 'w').close()
            killer, held = killer.result(), held.result()
    finally:
        pool.faults = {}
        for k in (1, 2, 3):
            open(f'{gate}.{k}', 'a').close()
    assert 'decoder stopped on this video' in json_error(killer, 422)
    assert held.status_code == 200, held.text
    expected = eager_probs(tiny, innocent)
    rec = held.json()['records'][0]
    assert rec['top_indices'] == list(np.argsort(-expected))
    np.testing.assert_allclose(rec['top_probs'], expected[rec['top_indices']], atol=1e-5)
    assert restarts(url) == before + 2
    assert post(url, tiny['clips'][0]).status_code == 200


# ---- serve.py: who may listen where ----

def test_a_host_beyond_loopback_needs_a_token_or_insecure(tiny, capsys, caplog, monkeypatch):
    """parse_args refuses a non-loopback --host without --token in one line; --insecure
    (or a token) is accepted, and serve_job then warns, before it binds anything."""
    import serve
    from server import main
    from utils.env import EnvError
    base = ['--config', tiny['config'], '--port', '0']
    for host in ('0.0.0.0', '192.0.2.7', '::'):
        with pytest.raises(SystemExit) as refused:
            serve.parse_args([*base, '--host', host])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if 'error:' in x]
        assert f'--host {host} is reachable' in line and '--token' in line and '--insecure' in line
        assert 'Traceback' not in err
    for host in ('127.0.0.1', 'localhost', '::1'):
        assert serve.parse_args([*base, '--host', host]).host == host

    def no_bind(*args):  # the job stops where it would listen
        raise EnvError('not listening in this test')
    monkeypatch.setattr(main, 'listen', no_bind)
    for extra, warned in ((['--insecure'], True), (['--token', 'sesame'], False)):
        args = serve.parse_args([*base, '--host', '0.0.0.0', *extra])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='server.main'), pytest.raises(EnvError):
            main.serve_job(args, tiny['cfg'])
        warnings = [r.getMessage() for r in caplog.records if r.name == 'server.main']
        assert warnings == (['serving on 0.0.0.0 without a token (--insecure): anyone who '
                             'reaches the port can use the model'] if warned else [])
