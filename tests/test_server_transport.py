"""Hostile clients against serve.py on a loopback port (issue 21, the transport side):
slow or silent connections, ping floods and clients that never read, foreign origins and
hosts, odd methods, malformed tokens and boundaries.  Every attack is bounded in time and
requests, and is followed by a good request the server must still answer.  The server runs
with tight limits so each timeout passes in seconds."""
import contextlib
import json
import random
import socket
import threading
import time

import pytest

from testing.attacks import RawWebSocket, address, bomb_png, masked, raw, status_of
from tests.conftest import run_main
from tests.test_server import (BOUNDARY, PART, files, http, json_error, metric,  # noqa: F401
                               online_frames, png, post, start, wait_for)

TOKEN = 'transport-7'
FRIEND = 'http://friend.example'
LIMITS = {'--header_timeout': 2, '--body_timeout': 2, '--min_body_kbps': 64,
          '--send_timeout': 3, '--ws_idle_timeout': 4, '--keep_alive_timeout': 1,
          '--max_connections': 40, '--max_queue': 2, '--max_online': 2,
          '--max_frame_pixels': 1000000}


@pytest.fixture(scope='module')
def server(files):  # noqa: F811
    flags = [str(x) for kv in LIMITS.items() for x in kv]
    s = start(files, 'transport', '--token', TOKEN, '--allow_origin', FRIEND,
              '--allow_host', 'tsm.example', *flags)
    try:
        yield s.wait()
    finally:
        s.stop()


def auth():
    return {'Authorization': f'Bearer {TOKEN}'}


def still_serves(server):
    """A good request after an attack: a prediction, and /healthz."""
    assert http().get(server.url + '/healthz', timeout=30).json() == {'status': 'ok'}


def log_after(server, attack):
    """The server's log lines that `attack()` caused: those between two marked /healthz
    requests, one sent (and its access line seen) before it, one after (the log is read
    from a pipe, so an earlier test's last line may still be on its way)."""
    def marked():
        mark = f'mark{random.randrange(10 ** 9)}'
        http().get(server.url + f'/healthz?{mark}', timeout=30)
        until = time.monotonic() + 10
        while not any(mark in line for line in server.lines) and time.monotonic() < until:
            time.sleep(0.05)
        return next(i for i, line in enumerate(server.lines) if mark in line)
    start = marked()
    attack()
    return server.lines[start + 1:marked()]


def quiet(lines):
    """At most one log line (besides a WebSocket's '[accepted]'), and no traceback."""
    assert len([line for line in lines if '[accepted]' not in line]) <= 1, lines
    assert not any('Traceback' in line or 'Error' in line for line in lines), lines


def session(server):
    """A ready online session on a raw socket (the token in the header)."""
    ws = RawWebSocket(server.url, [f'Authorization: Bearer {TOKEN}'])
    assert ws.status == 101
    op, data = ws.message()
    assert json.loads(data)['ready']
    return ws


def connect(server, **kwargs):
    from websockets.sync.client import connect as ws_connect
    return ws_connect('ws' + server.url[4:] + '/v1/online', open_timeout=30, **kwargs)


def third_session_within(server, seconds):
    """Whether a new session gets 'ready' (not '... sessions open') within `seconds`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with connect(server, additional_headers=auth()) as ws:
            if json.loads(ws.recv(30)).get('ready'):
                return True
        time.sleep(0.5)
    return False


def test_ping_flood_without_reading(server):
    """uvicorn answers each ping at once; a client that pings and never reads would grow
    the server's write buffer without end.  The server stops reading instead (the client
    cannot send on), and --send_timeout resets the connection."""
    ws = session(server)
    try:
        sent = ws.flood(masked(0x9, b'p' * 125))
    finally:
        ws.close()
    assert sent < 32 << 20  # of 128 MiB of pings (answers: 97% of that)
    still_serves(server)
    assert third_session_within(server, 30)


def test_two_clients_that_stop_reading_do_not_lock_out_a_third(server):
    """Two sessions (--max_online 2) send a frame, then pings, and read nothing: the
    server's sends to them stall (its answer, or the close at --ws_idle_timeout), the
    kernel resets them after --send_timeout, and their slots come free."""
    stalled = [session(server), session(server)]
    try:
        with connect(server, additional_headers=auth()) as ws:
            assert 'sessions open' in json.loads(ws.recv(30))['error']
        frame, ping = masked(0x2, png(online_frames(1)[0])), masked(0x9, b'p' * 125)
        for ws in stalled:
            ws.sock.sendall(frame)
            threading.Thread(target=ws.flood, args=(ping, 32 << 20), daemon=True).start()
        assert third_session_within(server, 60)
    finally:
        for ws in stalled:
            ws.close()
    still_serves(server)


def test_sessions_beyond_max_online_are_closed_with_1013(server):
    """--max_online 2: a third session is accepted, told why in JSON and closed with 1013
    (try again later); once one of the two closes, a new one starts."""
    from websockets.exceptions import ConnectionClosed
    def sessions():
        return metric(server.url, 'tsm_online_sessions', auth())
    wait_for(lambda: sessions() == 0, 'the sessions of earlier tests to end')
    with contextlib.ExitStack() as stack:
        first, second = (stack.enter_context(connect(server, additional_headers=auth()))
                         for _ in range(2))
        for ws in (first, second):
            assert json.loads(ws.recv(30))['ready']
        with connect(server, additional_headers=auth()) as third:
            assert json.loads(third.recv(30)) == {
                'error': '2 online sessions open; try again later'}
            with pytest.raises(ConnectionClosed) as closed:
                third.recv(30)
        assert closed.value.rcvd.code == 1013
        first.close()
        wait_for(lambda: sessions() == 1, 'the server to end the closed session')
        with connect(server, additional_headers=auth()) as again:
            assert json.loads(again.recv(30))['ready']


def test_idle_session_is_closed(server):
    from websockets.exceptions import ConnectionClosed
    with connect(server, additional_headers=auth()) as ws:
        assert json.loads(ws.recv(30))['ready']
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(30)  # --ws_idle_timeout 4
    assert closed.value.rcvd.code == 1000 and 'no frame' in closed.value.rcvd.reason
    still_serves(server)


def test_frame_bombs_are_refused_from_their_header(server):
    """A 30000 x 30000 PNG (2.7 GB decoded), a 1200 x 1000 one (over --max_frame_pixels)
    and a 4000 x 60 one: refused before decoding; the session goes on."""
    big, thin = bomb_png(30000, 30000), bomb_png(4000, 60)
    assert len(big) < 2 << 20
    with connect(server, additional_headers=auth()) as ws:
        assert json.loads(ws.recv(30))['ready']
        for bomb in (big, bomb_png(1200, 1000)):
            ws.send(bomb)
            assert 'over 1000000 pixels' in json.loads(ws.recv(30))['error']
        ws.send(thin)
        assert 'times as long as wide' in json.loads(ws.recv(30))['error']
        ws.send(png(online_frames(1)[0]))
        assert json.loads(ws.recv(30))['frame'] == 0
    from websockets.exceptions import ConnectionClosed
    with connect(server, additional_headers=auth()) as ws:  # over ws_max_size (2 MiB)
        assert json.loads(ws.recv(30))['ready']
        ws.send(b'\0' * (3 << 20))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(30)
        assert closed.value.rcvd.code == 1009
    still_serves(server)


def test_websocket_refused_before_the_handshake(server):
    """Token, Origin and Host are checked before the server accepts: an HTTP error, no
    session, one log line."""
    host, port = address(server.url)
    token = f'Authorization: Bearer {TOKEN}'
    cases = [([], 401), ([token, 'Origin: http://evil.example'], 403),
             ([token, 'Origin: null'], 403), ([token, 'Host: evil.example'], 400),
             ([token, 'Origin: http://evil.example', 'Host: evil.example'], 400)]
    for headers, status in cases:
        statuses = []
        quiet(log_after(server, lambda: statuses.append(RawWebSocket(server.url, headers).status)))
        assert statuses == [status], headers
    for headers in (['Origin: ' + FRIEND], [f'Origin: http://{host}:{port}'],
                    [f'Origin: http://localhost:{port}', f'Host: localhost:{port}']):
        ws = RawWebSocket(server.url, [token, *headers])
        try:
            assert ws.status == 101 and json.loads(ws.message()[1])['ready'], headers
        finally:
            ws.close()


def test_malformed_websocket_messages(server):
    """A binary first message that is no image: an error answer, the session goes on; a
    text message that is neither a frame nor a reset: closed with a reason.  Neither
    leaves a traceback in the log."""
    from websockets.exceptions import ConnectionClosed

    def attack():
        with connect(server, additional_headers=auth()) as ws:
            assert json.loads(ws.recv(30))['ready']
            ws.send(b'\xff\x00' * 100)
            assert 'not a JPEG or PNG' in json.loads(ws.recv(30))['error']
            ws.send('{"token": "\\udc80"}')
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(30)
            assert closed.value.rcvd.code == 1003 and 'binary' in closed.value.rcvd.reason
    quiet(log_after(server, attack))

    def invalid_utf8():
        ws = session(server)
        try:
            ws.sock.sendall(masked(0x1, b'{"reset": "\xed\xb2\x80"}'))
            op, data = ws.message()
            assert op == 0x8 and int.from_bytes(data[:2], 'big') == 1007
        finally:
            ws.close()
    quiet(log_after(server, invalid_utf8))
    still_serves(server)


# ---- HTTP ----

def test_slow_and_silent_headers_are_cut(server):
    host, port = address(server.url)
    answer = raw(server.url, f'GET /healthz HTTP/1.1\r\nHost: {host}\r\n'.encode())  # and no end
    assert status_of(answer) == 408
    assert raw(server.url, b'') == b''  # a silent connection: closed within --header_timeout
    # an answer sent before the body was read closes the connection: the rest of a body
    # announced but never sent cannot hold it
    answer = raw(server.url, f'GET /healthz HTTP/1.1\r\nHost: {host}\r\n'
                         'Content-Length: 1000000\r\n\r\nx'.encode(), timeout=5)
    assert status_of(answer) == 200 and b'connection: close' in answer.lower()
    still_serves(server)


def test_idle_keep_alive_connection_is_closed(server):
    host, _ = address(server.url)
    answer = raw(server.url, f'GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode())
    assert status_of(answer) == 200 and answer.endswith(b'{"status":"ok"}')  # then closed


def slow_upload(server, answers):
    """A /v1/predict upload sending one byte a second, until the server answers."""
    host, _ = address(server.url)
    sock = socket.create_connection(address(server.url), timeout=20)
    head = (f'POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n'
            f'Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n'
            'Content-Length: 100000\r\n\r\n').encode()
    try:
        sock.sendall(head + PART)
        sock.setblocking(False)
        for _ in range(20):
            sock.send(b'\0')
            time.sleep(1)
            try:
                answers.append(sock.recv(65536))
                return
            except BlockingIOError:
                pass
        answers.append(b'')
    finally:
        sock.close()


def test_slow_uploads_take_no_queue_slot_and_time_out(files, server):  # noqa: F811
    """32 uploads at a byte a second: other requests still get served (a slot of
    --max_queue 2 is taken once a body is in), and each slow one gets 408 once under
    --min_body_kbps after --body_timeout."""
    answers = []
    threads = [threading.Thread(target=slow_upload, args=(server, answers)) for _ in range(32)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = post(server.url, files['clip'], headers=auth())
    assert r.status_code == 200, r.text
    for t in threads:
        t.join(30)
    assert len(answers) == 32 and all(status_of(a) == 408 for a in answers), answers[:3]
    assert b'too slowly' in answers[0]
    still_serves(server)


def test_connection_limit(server):
    """--max_connections 40: with 39 idle connections open, a request gets 503; they
    are cut after --header_timeout, and the server answers again."""
    socks = [socket.create_connection(address(server.url), timeout=10) for _ in range(39)]
    try:
        time.sleep(0.3)
        r = http().get(server.url + '/healthz', timeout=30)
        assert r.status_code == 503
        for s in socks:
            assert s.recv(10) == b''  # closed by the server
    finally:
        for s in socks:
            s.close()
    still_serves(server)


def test_cross_origin_and_rebinding(files, server):  # noqa: F811
    """POSTs from a foreign Origin: 403 (before the token); the page's own origin, an
    --allow_origin and clients without Origin are served.  A Host that is not an IP,
    localhost, or an --allow_host: 400 on every route (DNS rebinding)."""
    host, port = address(server.url)
    for origin in ('http://evil.example', 'null', f'http://{host}:{port + 1}',
                   f'https://{host}:{port}'):
        r = post(server.url, files['clip'], headers={'Origin': origin, **auth()})
        assert 'cross-origin' in json_error(r, 403)
    for origin in (f'http://{host}:{port}', FRIEND, None):
        r = post(server.url, files['clip'], headers={**auth(), **({'Origin': origin} if origin else {})})
        assert r.status_code == 200, (origin, r.text)
    assert http().get(server.url + '/v1/labels', headers={**auth(), 'Origin': 'http://evil.example'}
                      ).status_code == 200  # a cross-site GET's answer is the browser's to withhold
    for name in ('evil.example', f'evil.example:{port}', 'localhost.evil.example'):
        r = http().get(server.url + '/healthz', headers={'Host': name})
        assert 'Host' in json_error(r, 400)
    for name in (f'localhost:{port}', '[::1]', f'{host}:{port}', 'tsm.example', 'TSM.example.'):
        assert http().get(server.url + '/healthz', headers={'Host': name}).status_code == 200
    # behind a TLS proxy on this machine (X-Forwarded-Proto trusted from 127.0.0.1):
    r = post(server.url, files['clip'], headers={**auth(), 'Host': 'tsm.example',
                                                  'X-Forwarded-Proto': 'https',
                                                  'Origin': 'https://tsm.example'})
    assert r.status_code == 200, r.text


def test_odd_methods_share_one_metric_label(server):
    methods = ['X' + ''.join(random.choices('ABCDEFGHIJKLMNOP', k=8)) for _ in range(6)]
    for m in methods:
        assert http().request(m, server.url + '/healthz').status_code == 405
    text = http().get(server.url + '/metrics', headers=auth()).text
    assert not any(m in text for m in methods)
    assert metric_with_auth(server, route='/healthz', method='other') >= 6


def metric_with_auth(server, **labels):
    from prometheus_client.parser import text_string_to_metric_families
    text = http().get(server.url + '/metrics', headers=auth()).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == 'tsm_http_requests_total'
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_malformed_tokens_and_boundaries_log_one_line(server):
    host, _ = address(server.url)
    surrogate = b'\xed\xb2\x80'  # a lone surrogate, UTF-8 style
    for request in (
            b'GET /v1/labels HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n',
            b'GET /v1/labels HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n'):
        answers = []
        quiet(log_after(server, lambda: answers.append(
            raw(server.url, request % (host.encode(), surrogate)))))
        assert status_of(answers[0]) == 401
    answers = []
    body = b'--' + b'b' * 300 + b'--\r\n'
    quiet(log_after(server, lambda: answers.append(raw(server.url, (
        b'POST /v1/predict HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n'
        b'Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s'
        % (host.encode(), TOKEN.encode(), b'b' * 300, len(body), body))))))
    assert status_of(answers[0]) == 400 and b'boundary' in answers[0]
    still_serves(server)


def test_every_html_answer_forbids_framing(server):
    for path in ('/', '/static/index.html'):
        r = http().get(server.url + path)
        assert r.status_code == 200 and r.headers['content-type'].startswith('text/html')
        assert "frame-ancestors 'none'" in r.headers['content-security-policy']
        assert "default-src 'self'" in r.headers['content-security-policy']
    assert http().get(server.url + '/docs').status_code == 404
    assert http().get(server.url + '/healthz').headers['x-content-type-options'] == 'nosniff'


def test_flags_are_checked(files):  # noqa: F811
    """Flags are checked as they are parsed, before any work: in this process."""
    import serve
    for flags, words in ((['--token', 'caf\u00e9'], 'ASCII'), (['--allow_origin', 'evil'], 'scheme'),
                         (['--header_timeout', '0'], 'positive')):
        code, _, err = run_main(serve.main, '--config', files['config'], *flags)
        assert code == 2 and words in err and 'Traceback' not in err, err
