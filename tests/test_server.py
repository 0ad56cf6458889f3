"""serve.py as users run it: a real uvicorn server on a free loopback port, over real HTTP
and WebSocket, with a tiny ResNet-18 TSM.  Answers are checked against the eager model
and predict.py's online loop run here, window times and sampled frames against values
worked out by hand, and every bad input against its status code."""
import asyncio
import base64
import glob
import hashlib
import io
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import cv2
import numpy as np
import paddle
import pytest
import requests
from PIL import Image

from testing.served import Served
from testing.media import make_clip, write_mp4
from tests.test_bad_inputs import CASES, make_bad

TOKEN = 'sesame-123'
LIMIT_MB = 0.5


def grey_clip(n, height=48, width=64):
    """Frame i is one grey level, 20 + 8 i: a thumbnail names the frame it shows."""
    return np.stack([np.full((height, width, 3), 20 + 8 * i, np.uint8) for i in range(n)])


@pytest.fixture(scope='module')
def files(tmp_path_factory, shared_model):
    """The session's tiny config and seeded weights (conftest.shared_model: exported once
    for every server of the session), and clips."""
    d = tmp_path_factory.mktemp('serve')
    return {'dir': d, 'config': shared_model['config'], 'weights': shared_model['weights'],
            'clip': write_mp4(d / 'clip.mp4', make_clip(30)),
            'grey': write_mp4(d / 'grey.mp4', grey_clip(30))}


def start(files, name, *extra):
    tmp = files['dir'] / f'tmp_{name}'
    tmp.mkdir()
    s = Served(['--config', files['config'], '--weights', files['weights'], '--precision', 'fp32',
                *extra], env={'TMPDIR': str(tmp)})
    s.tmp = tmp
    return s


@pytest.fixture(scope='module')
def servers(files):
    """Two servers, started side by side: 'open' (no token, 2 decode workers) and
    'guarded' (a token, a queue of 1, a 0.5 MB upload limit)."""
    both = {'open': start(files, 'open', '--decode_workers', '2'),
            'guarded': start(files, 'guarded', '--token', TOKEN, '--max_queue', '1',
                             '--max_upload_mb', str(LIMIT_MB))}
    try:
        for s in both.values():
            s.wait()
        yield both
    finally:
        for s in both.values():
            s.stop()


@pytest.fixture(scope='module')
def open_url(servers):
    return servers['open'].url


def http():
    s = requests.Session()
    s.trust_env = False  # loopback: never through a proxy
    return s


def post(url, path=None, data=None, filename=None, fields=None, headers=None):
    if data is None:
        with open(path, 'rb') as f:
            data = f.read()
    return http().post(url + '/v1/predict', files={'video': (filename or os.path.basename(path or 'x'),
                                                             data, 'video/mp4')},
                       data=fields or {}, headers=headers or {}, timeout=120)


def json_error(r, status):
    """A JSON error of that status, one line, no traceback."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body['status'] == status and isinstance(body['error'], str) and body['error']
    assert 'Traceback' not in r.text and '/tmp' not in body['error'] and '\n' not in body['error']
    return body['error']


def uploads_left(server):
    """Files in the server's private upload folders (there is one, under its TMPDIR)."""
    folders = glob.glob(str(server.tmp / 'tsm-serve-*'))
    assert len(folders) == 1, folders
    return os.listdir(folders[0])


def eager_probs(files, path):
    """Class probabilities of the eager model on the reader's clip of `path`."""
    from models import get_model, load_weights
    from reader import KineticsReader
    from utils.config_utils import parse_config
    cfg = parse_config(files['config'])
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, files['weights'])
    clip = KineticsReader('infer', cfg, items=[(path, -1, None)])[0][0]
    with paddle.no_grad():
        logits = model(paddle.to_tensor(clip[None])).numpy()[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    return p / p.sum()


# ---- the API on the open server ----

def strings(value):
    """Every string in a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_health_labels_and_model_description(files, open_url):
    r = http().get(open_url + '/healthz')
    assert r.status_code == 200 and r.json() == {'status': 'ok'}  # no token: nothing more
    assert http().get(open_url + '/v1/labels').json() == {'num_classes': 3,
                                                          'labels': ['red', 'green', 'blue']}
    m = http().get(open_url + '/v1/model').json()
    assert not [v for v in strings(m) if os.path.isabs(v)]  # no folder of the server's machine
    with open(files['weights'], 'rb') as f:
        assert m['weights'] == {'file': 'w.pdparams', 'sha256': hashlib.sha256(f.read()).hexdigest()}
    assert m['precision'] == 'fp32' and m['engine']
    assert m['config']['file'] == 'tiny.yaml' and m['config']['MODEL']['seg_num'] == 4
    assert (m['protocol']['short_size'], m['protocol']['target_size']) == (36, 32)
    assert m['protocol']['num_clips'] == 1 and m['protocol']['num_crops'] == 1
    assert 'centre crop' in m['protocol']['text'] and m['batch_size'] == 2
    assert m['online'] == {'available': True, 'trained_for_online': False,
                           'shift_direction': 'paddle',  # the camera mode's exported model:
                           'engine': {'engine': 'openvino', 'precision': 'fp32'}}
    assert http().get(open_url + '/docs').status_code == 404  # its Swagger page needs a CDN: --docs
    spec = http().get(open_url + '/openapi.json').json()
    assert 'video' in spec['paths']['/v1/predict']['post']['requestBody']['content'][
        'multipart/form-data']['schema']['properties']


def test_predict_answers_as_the_eager_model(files, open_url):
    r = post(open_url, files['clip'], fields={'topk': '2'})
    assert r.status_code == 200, r.text
    body = r.json()
    (rec,) = body['records']
    assert set(rec) == {'path', 'top_names', 'top_indices', 'top_probs'}  # predict_results.json
    assert rec['path'] == 'clip.mp4' and len(rec['top_indices']) == 2
    expected = eager_probs(files, files['clip'])
    assert rec['top_indices'] == list(np.argsort(-expected)[:2])
    assert rec['top_names'] == [['red', 'green', 'blue'][i] for i in rec['top_indices']]
    np.testing.assert_allclose(rec['top_probs'], expected[rec['top_indices']], atol=1e-5)
    t = body['timings']
    assert 0 < t['decode'] <= t['total'] and 0 < t['model'] <= t['total']
    assert body['video'] == {'num_frames': 30, 'fps': 25.0, 'duration': 1.2,
                             'bytes': os.path.getsize(files['clip'])}
    assert 'frames' not in body  # only when asked
    default = post(open_url, files['clip']).json()['records'][0]
    assert len(default['top_indices']) == 3  # MODEL.topk 5, capped at the 3 classes


def test_windows_and_the_frames_the_model_sampled(files, open_url):
    r = post(open_url, files['grey'], fields={'window_seconds': '0.4', 'frames': '1'})
    assert r.status_code == 200, r.text
    body = r.json()
    # 30 frames at 25 fps, windows of 0.4 s: [0, 0.4), [0.4, 0.8), [0.8, 1.2]
    assert [(rec['start'], rec['end']) for rec in body['records']] == [(0, .4), (.4, .8), (.8, 1.2)]
    # each window holds 10 frames; 4 segments of 10 // 4 = 2 frames, the middle one of
    # each, (2 - 1) // 2 = 0: frames 0, 2, 4, 6 of the window; frame i is grey 20 + 8 i
    assert len(body['frames']) == 3
    for k, urls in enumerate(body['frames']):
        assert len(urls) == 4
        for j, url in enumerate(urls):
            head, data = url.split(',', 1)
            assert head == 'data:image/jpeg;base64'
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
            assert img.shape == (96, 96, 3)  # the 32 px centre crop, scaled to 96
            assert abs(img.mean() - (20 + 8 * (10 * k + 2 * j))) < 2.5, (k, j, img.mean())


BAD_FORMS = {
    'not multipart': (dict(data=b'{"video": "x"}', headers={'Content-Type': 'application/json'}), 415),
    'no video field': (dict(files={'other': ('a.mp4', b'xx')}), 422),
    'topk zero': (dict(fields={'topk': '0'}), 422),
    'topk not a number': (dict(fields={'topk': 'five'}), 422),
    'topk over the classes': (dict(fields={'topk': '4'}), 422),
    'stride without window': (dict(fields={'stride_seconds': '1'}), 422),
    'window nan': (dict(fields={'window_seconds': 'nan'}), 422),
    'window negative': (dict(fields={'window_seconds': '-2'}), 422),
    'two videos': (dict(files=[('video', ('a.mp4', b'1')), ('video', ('b.mp4', b'2'))]), 400),
    'long field': (dict(fields={'topk': '1' * 1000}), 400),
}


@pytest.mark.parametrize('case', sorted(BAD_FORMS))
def test_bad_requests_get_json_errors(case, files, open_url):
    kwargs, status = BAD_FORMS[case]
    with open(files['clip'], 'rb') as f:
        clip = f.read()
    if 'fields' in kwargs:
        r = http().post(open_url + '/v1/predict', files={'video': ('c.mp4', clip)},
                        data=kwargs['fields'], timeout=60)
    else:
        r = http().post(open_url + '/v1/predict', timeout=60, **kwargs)
    json_error(r, status)


@pytest.mark.parametrize('kind', sorted(k for k in CASES if k != 'missing'))
def test_bad_and_odd_videos(kind, tmp_path, open_url, servers):
    """Issue 6's inventory: a broken file gets 422 naming no server path, an oddity that
    decodes gets its prediction; the server lives on and keeps no upload."""
    path = make_bad(kind, tmp_path)
    r = post(open_url, str(path))
    if CASES[kind]:
        assert r.status_code == 200, r.text
        assert len(r.json()['records']) == 1
    else:
        assert 'decod' in json_error(r, 422)
    assert http().get(open_url + '/healthz').status_code == 200
    assert uploads_left(servers['open']) == []


def test_the_client_file_name_is_never_a_path(files, open_url, servers):
    # text sent under the name of a real video on this machine: the bytes are what count
    json_error(post(open_url, data=b'not a video\n' * 50, filename=files['clip']), 422)
    r = post(open_url, files['clip'], filename='../../../etc/evil name.mp4')
    assert r.status_code == 200 and r.json()['records'][0]['path'] == 'evil name.mp4'
    assert not os.path.exists('/etc/evil name.mp4')
    assert uploads_left(servers['open']) == []


def metric(url, name, headers=None, **labels):
    from prometheus_client.parser import text_string_to_metric_families
    text = http().get(url + '/metrics', headers=headers or {}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_eight_concurrent_requests(files, open_url):
    """Over real HTTP: each answer is the single request's, every clip goes through the
    model once, in calls of at most INFER.batch_size.  That concurrent clips do share a
    call is made certain in test_server_app.test_clips_that_wait_together_share_model_calls."""
    ok_before = metric(open_url, 'tsm_http_requests_total', route='/v1/predict', status='200')
    clips_before = metric(open_url, 'tsm_model_batch_size_sum')
    single = post(open_url, files['clip']).json()['records'][0]
    start = threading.Barrier(8)

    def one(_):
        start.wait()
        return post(open_url, files['clip'])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    for r in answers:
        assert r.status_code == 200, r.text
        rec = r.json()['records'][0]
        assert rec['top_indices'] == single['top_indices']
        np.testing.assert_allclose(rec['top_probs'], single['top_probs'], atol=1e-6)
        assert all(1 <= b <= 2 for b in r.json()['batch_sizes'])  # INFER.batch_size
    assert metric(open_url, 'tsm_http_requests_total', route='/v1/predict',
                  status='200') == ok_before + 9
    assert metric(open_url, 'tsm_model_batch_size_sum') == clips_before + 9  # every clip, once
    assert http().get(open_url + '/healthz').status_code == 200


def test_metrics_in_the_prometheus_text_format(open_url):
    from prometheus_client.parser import text_string_to_metric_families
    http().get(open_url + '/v1/labels')
    r = http().get(open_url + '/metrics')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/plain')
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families['tsm_http_requests'].type == 'counter'
    assert families['tsm_http_request_duration_seconds'].type == 'histogram'
    assert families['tsm_model_batch_size'].type == 'histogram'
    count = metric(open_url, 'tsm_http_request_duration_seconds_count', route='/v1/labels')
    assert count == metric(open_url, 'tsm_http_requests_total', route='/v1/labels')
    assert count >= 1


def online_frames(n):
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def png(rgb):
    ok, buf = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def test_online_websocket_answers_as_predict_online(files, open_url):
    """Each frame's answer equals predict.py --online's loop (jobs.online_job.
    run_online) over the same frames, run here on the eager model."""
    from websockets.sync.client import connect
    from models import get_model, load_weights
    from models.online import OnlineTSM
    from utils.config_utils import parse_config
    from jobs.online_job import run_online
    cfg = parse_config(files['config'])
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, files['weights'])
    frames = online_frames(6)
    expected = run_online(OnlineTSM(model, cfg.MODEL.seg_num), frames, cfg,
                          ['red', 'green', 'blue'])
    ws_url = 'ws' + open_url[4:] + '/v1/online'
    with connect(ws_url, open_timeout=30) as ws:
        hello = json.loads(ws.recv(30))
        assert hello['ready'] and hello['window'] == 4 and hello['trained_for_online'] is False
        for t, frame in enumerate(frames):
            ws.send(png(frame))
            got = json.loads(ws.recv(30))
            assert got['frame'] == t and got['class_index'] == expected[t]['class_index']
            assert got['probability'] == pytest.approx(expected[t]['probability'], abs=1e-5)
            assert got['class_name'] == expected[t]['class_name']
        ws.send(b'\x00garbage')
        assert 'JPEG' in json.loads(ws.recv(30))['error']  # the session goes on
        ws.send(json.dumps({'reset': True}))
        assert json.loads(ws.recv(30)) == {'reset': True}
        ws.send(png(frames[0]))
        again = json.loads(ws.recv(30))
        assert again['frame'] == 0 and again['probability'] == pytest.approx(
            expected[0]['probability'], abs=1e-5)


# ---- the guarded server: token, upload limit, queue ----

def auth(token=TOKEN):
    return {'Authorization': f'Bearer {token}'}


def test_token_protects_the_api(files, servers):
    url = servers['guarded'].url
    for path in ('/v1/labels', '/v1/model', '/metrics'):
        for headers in ({}, auth('wrong'), {'Authorization': TOKEN}):
            r = http().get(url + path, headers=headers)
            assert 'token' in json_error(r, 401)
            assert r.headers['www-authenticate'] == 'Bearer'
        assert http().get(url + path, headers=auth()).status_code == 200
    json_error(post(url, files['clip']), 401)
    r = post(url, files['clip'], headers=auth())
    assert r.status_code == 200 and r.json()['records'][0]['path'] == 'clip.mp4'
    for path in ('/healthz', '/', '/static/app.js', '/openapi.json'):  # no data behind these
        assert http().get(url + path).status_code == 200, path


def raw_post(url, head, chunks, chunked=False):
    """Send a request by hand: headers, then body chunks (as many as the server takes),
    then read what it answered; -> (bytes sent, status line, JSON body)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    sent = 0
    try:
        sock.sendall(head)
        for c in chunks:
            sock.sendall(b'%x\r\n%s\r\n' % (len(c), c) if chunked else c)
            sent += len(c)
    except OSError:  # the server closed after answering
        pass
    data = b''
    while True:  # the server closes after an upload error (Connection: close)
        more = sock.recv(65536)
        if not more:
            break
        data += more
    sock.close()
    head_part, body = data.split(b'\r\n\r\n', 1)
    return sent, head_part.split(b'\r\n')[0].decode(), json.loads(body)


BOUNDARY = b'b0undary'
PART = (b'--' + BOUNDARY + b'\r\nContent-Disposition: form-data; name="video"; '
        b'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n')


def request_head(length=None):
    return (b'POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ' +
            TOKEN.encode() + b'\r\nContent-Type: multipart/form-data; boundary=' + BOUNDARY +
            (b'\r\nContent-Length: %d' % length if length else b'\r\nTransfer-Encoding: chunked')
            + b'\r\n\r\n')


def test_oversize_upload_declared(servers):
    """Content-Length over the limit: 413 at once, the body never waited for."""
    sent, status, body = raw_post(servers['guarded'].url, request_head(100 << 20), [PART])
    assert status.startswith('HTTP/1.1 413') and 'limit' in body['error']


def test_oversize_upload_streamed(servers):
    """No Content-Length: the server counts what comes, answers 413 once past the limit
    and closes, so a client with 64 MB to send cannot send them (what it did send sat in
    the sockets' buffers, a few MB on loopback)."""
    chunks = [PART] + [b'\0' * 65536] * 1024
    sent, status, body = raw_post(servers['guarded'].url, request_head(), chunks, chunked=True)
    assert status.startswith('HTTP/1.1 413') and 'limit' in body['error']
    assert sent < 32 << 20
    assert uploads_left(servers['guarded']) == []
    assert http().get(servers['guarded'].url + '/healthz').status_code == 200


def decode_workers(server):
    """The server's decode worker processes (not multiprocessing's resource tracker)."""
    found = []
    for pid in children(server.proc.pid):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if b'spawn_main' in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def wait_for(condition, what, timeout=60):
    """Poll `condition()` until it holds (a state, not a duration, decides the test)."""
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            pytest.fail(f'timed out waiting for {what}')
        time.sleep(0.02)


def test_full_queue_gets_503_with_retry_after(files, servers):
    """--max_queue 1: a request still uploading holds no slot; one in its decode does (held
    there: the decode worker is stopped), so the next gets 503 with Retry-After, counted
    once as queue_full; the held one is answered once the worker goes on."""
    url = servers['guarded'].url
    u = urlparse(url)
    held = socket.create_connection((u.hostname, u.port), timeout=30)
    held.sendall(request_head(400000) + PART + b"\0" * 1000)  # still uploading
    try:
        r = post(url, files['clip'], headers=auth())
        assert r.status_code == 200, r.text
    finally:
        held.close()
    workers = decode_workers(servers['guarded'])
    assert workers
    busy_before = metric(url, 'tsm_predict_rejected_total', auth(), reason='queue_full')
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        with ThreadPoolExecutor(1) as threads:
            in_decode = threads.submit(post, url, files['clip'], headers=auth())
            wait_for(lambda: metric(url, 'tsm_predict_in_flight', auth()) == 1,
                     'a request in its decode')
            busy = post(url, files['clip'], headers=auth())
            assert 'busy' in json_error(busy, 503) and busy.headers['retry-after'] == '1'
            assert metric(url, 'tsm_predict_rejected_total', auth(),
                          reason='queue_full') == busy_before + 1
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
            r = in_decode.result()
            assert r.status_code == 200 and r.json()['records'][0]['path'] == 'clip.mp4', r.text
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert uploads_left(servers['guarded']) == []


def test_online_websocket_needs_the_token_before_the_handshake(servers):
    """Browsers cannot set headers on a WebSocket: the page sends the token as the
    subprotocol tsm.bearer.<base64url>; other clients may send Authorization."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    ws_url = 'ws' + servers['guarded'].url[4:] + '/v1/online'
    wrong = 'tsm.bearer.' + base64.urlsafe_b64encode(b'wrong').decode().rstrip('=')
    for kwargs in ({}, {'subprotocols': ['tsm.online', wrong]},
                   {'additional_headers': auth('wrong')}):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=30, **kwargs)
        assert refused.value.response.status_code == 401
    right = 'tsm.bearer.' + base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip('=')
    with connect(ws_url, open_timeout=30, subprotocols=['tsm.online', right]) as ws:
        assert ws.subprotocol == 'tsm.online'
        assert json.loads(ws.recv(30))['ready']
    with connect(ws_url, open_timeout=30, additional_headers=auth()) as ws:
        assert json.loads(ws.recv(30))['ready']


def children(pid):
    """Process ids whose parent is `pid`."""
    found = set()
    for task in glob.glob(f'/proc/{pid}/task/*/children'):
        with open(task) as f:
            found.update(int(c) for c in f.read().split())
    return found


def gone(pids, timeout=15):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        alive = [p for p in pids if os.path.exists(f'/proc/{p}')]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_stopping_leaves_no_worker_and_no_upload_folder(servers):
    """SIGTERM: a clean shutdown, the upload folder removed, the decode workers ended;
    SIGKILL: the workers still end (the kernel ends them with their parent)."""
    s = servers['open']
    folder = glob.glob(str(s.tmp / 'tsm-serve-*'))[0]
    workers = children(s.proc.pid)
    assert len(workers) >= 2  # --decode_workers 2 (and the pool's resource tracker)
    s.stop()
    assert 'Application shutdown complete' in s.log
    assert not os.path.exists(folder)
    assert gone(workers)
    k = servers['guarded']
    workers = children(k.proc.pid)
    assert workers
    k.proc.kill()
    k.proc.wait()
    assert gone(workers)


# ---- the parts, in this process ----

def test_micro_batcher_groups_concurrent_clips():
    from server.batching import MicroBatcher
    calls = []

    def run(xs):
        calls.append(list(xs))
        return [x * 10 for x in xs]

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(run, max_batch=4, wait_s=0.05, executor=ex)
            b.start()
            out = await asyncio.gather(b.submit([1, 2]), b.submit([3]), b.submit([4, 5]))
            await b.stop()
        return out
    out = asyncio.run(main())
    assert calls == [[1, 2, 3, 4], [5]]  # three requests, two model calls
    assert [[v for v, _ in r] for r in out] == [[10, 20], [30], [40, 50]]
    assert [info['batch'] for _, info in out[0]] == [4, 4] and out[2][1][1]['batch'] == 1


def test_decode_pool_outlives_a_dead_worker_and_bounds_decoding(files):
    from server.decode import DecodeFailed, DecodePool
    from utils.config_utils import parse_config
    cfg = parse_config(files['config'])
    pool = DecodePool(cfg, 1)
    slow_cfg = parse_config(files['config'])
    slow_cfg.INFER.video_timeout = 1e-4  # every decode runs over
    slow = DecodePool(slow_cfg, 1)
    slow.warm()  # both pools start side by side
    try:
        first = asyncio.run(pool.decode(files['clip']))
        assert first['clips'].shape == (1, 4, 3, 32, 32)
        for pid in list(pool.pool._processes):
            os.kill(pid, 9)  # the worker dies (as on a decoder segfault)
        again = asyncio.run(pool.decode(files['clip']))
        np.testing.assert_array_equal(again['clips'], first['clips'])
        assert pool.restarts == 1
    finally:
        pool.close()
    try:
        with pytest.raises(DecodeFailed, match='video_timeout'):
            asyncio.run(slow.decode(files['clip']))
    finally:
        slow.close()
