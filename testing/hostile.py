"""The hostile clients of the soak (bench/serving_load.py --soak): issue 21's attacks,
each bounded in requests and time, each -> the outcomes it saw (an HTTP status, 'closed',
a WebSocket close code, ...).  Three lanes run side by side, each going round its own list:
connections (slow heads, slow bodies, idle sockets), uploads (bombs and refusals, quick),
websocket (at most one hostile session at a time, so a good session always has a slot
of --max_online 2)."""
import json
import random
import socket
import threading
import time

import cv2
import numpy as np

from testing.attacks import (RawWebSocket, address, bomb_png, masked, multipart,
                             png_header_only, raw, status_of, y4m)


class Target:
    """What the attacks need: the server's URL, token and limits (serve.py's flags), a
    real clip (its bytes, and its path on the server's disk), a JPEG frame, the stop
    event."""

    def __init__(self, url, token, limits, clip_path, frame, stop):
        self.url, self.token, self.limits, self.stop = url, token, limits, stop
        self.host, self.port = address(url)
        self.clip_path, self.frame = clip_path, frame
        with open(clip_path, 'rb') as f:
            self.clip = f.read()
        self.auth = {'Authorization': f'Bearer {token}'}
        self.ws_url = 'ws' + url[4:] + '/v1/online'

    def head(self, method, path, extra=()):
        """A raw request head with the right Host."""
        lines = [f'{method} {path} HTTP/1.1', f'Host: {self.host}:{self.port}', *extra]
        return ('\r\n'.join(lines) + '\r\n').encode()


def http():
    import requests
    s = requests.Session()
    s.trust_env = False  # loopback: never through a proxy
    return s


def post(t, data, filename='attack.mp4', fields=None, headers=None):
    """An upload with the token (unless headers replace it) -> its status as text."""
    r = http().post(t.url + '/v1/predict', files={'video': (filename, data, 'video/mp4')},
                    data=fields or {}, headers={**t.auth, **(headers or {})}, timeout=120)
    return str(r.status_code)


def wait_answer(sock, seconds, stop, drip=None):
    """Read what the server sends within `seconds` (sending one `drip` byte a second
    meanwhile) -> its status, 'closed' (closed without a word), 'reset', 'no answer' or
    'stopped' (the soak ended first).  Read before each drip: a send after the server's
    answer and close would be reset, and the answer lost with it."""
    sock.setblocking(False)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if stop.is_set():
            return 'stopped'
        try:
            data = sock.recv(65536)
            return str(status_of(data)) if data else 'closed'
        except BlockingIOError:
            pass
        except OSError:
            return 'reset'
        if drip:
            try:
                sock.send(drip)
            except OSError:  # closed by the server: its answer is read next
                pass
        time.sleep(1)
    return 'no answer'


def in_threads(fns):
    """Run each of fns at once, in threads of its own -> their results."""
    out = []

    def run(f):
        try:
            out.append(f())
        except Exception as e:  # the client failed (refused, timed out): counted
            out.append(f'client error: {type(e).__name__}')
    threads = [threading.Thread(target=run, args=(f,)) for f in fns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out


# ---- connections ----

def slowloris_heads(t, n=16):
    """n request heads at a header byte a second -> 408 at --header_timeout."""
    def one():
        with socket.create_connection((t.host, t.port), timeout=10) as sock:
            sock.sendall(t.head('GET', '/healthz') + b'X-Slow: ')
            return wait_answer(sock, 3 * t.limits['header_timeout'] + 10, t.stop, drip=b'a')
    return in_threads([one] * n)


def slow_bodies(t, n=16):
    """n uploads at a byte a second -> 408 after --body_timeout."""
    body, ctype = multipart({}, 'slow.mp4', t.clip)

    def one():
        with socket.create_connection((t.host, t.port), timeout=10) as sock:
            sock.sendall(t.head('POST', '/v1/predict', [
                f'Authorization: Bearer {t.token}', f'Content-Type: {ctype.decode()}',
                f'Content-Length: {len(body)}']) + b'\r\n' + body[:200])
            return wait_answer(sock, 3 * t.limits['body_timeout'] + 30, t.stop, drip=b'\0')
    return in_threads([one] * n)


def idle_connections(t, margin=16):
    """--max_connections minus `margin` sockets that send nothing -> closed by the
    server at --header_timeout."""
    socks = [socket.create_connection((t.host, t.port), timeout=10)
             for _ in range(t.limits['max_connections'] - margin)]

    def one(sock):
        with sock:
            return wait_answer(sock, 3 * t.limits['header_timeout'] + 10, t.stop)
    return in_threads([lambda s=s: one(s) for s in socks])


# ---- uploads ----

def tiny_windows(t):
    """window_seconds=1e-300, 1e-6, stride_seconds=1e-9 -> 422 each, before any decode."""
    return [post(t, t.clip, fields=f) for f in (
        {'window_seconds': '1e-300'}, {'window_seconds': '1e-6'},
        {'window_seconds': '2', 'stride_seconds': '1e-9'})]


def y4m_bombs(t):
    """Headers declaring 16000x16000, 1e-9 fps, 100000 fps, 4000x2 -> 422 each."""
    return [post(t, data, 'bomb.y4m') for data in (
        y4m(16000, 16000, data=False), y4m(4, 4, '1:1000000000', frames=2),
        y4m(4, 4, '100000:1', frames=2), y4m(4000, 2))]


def png_as_video(t):
    """A PNG declaring 16000x16000 and a real PNG, as .mp4 -> 422 each."""
    ok, real = cv2.imencode('.png', np.zeros((48, 64, 3), np.uint8))
    return [post(t, png_header_only(16000, 16000)), post(t, real.tobytes())]


def playlists_as_mp4(t):
    """An HLS playlist and an ffconcat script naming a video on the server's disk, as
    .mp4 -> 422 each."""
    playlist = (f'#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n'
                f'{t.clip_path}\n#EXT-X-ENDLIST\n')
    concat = f"ffconcat version 1.0\nfile '{t.clip_path}'\n"
    return [post(t, playlist.encode(), 'list.mp4'), post(t, concat.encode(), 'concat.mp4')]


def bad_credentials(t):
    """No token, a wrong one, a lone surrogate; a foreign Origin; a foreign Host; the
    same at the WebSocket handshake -> 401 / 403 / 400."""
    s, token = http(), f'Authorization: Bearer {t.token}'
    out = [str(s.get(t.url + '/v1/labels', headers=h, timeout=30).status_code)
           for h in ({}, {'Authorization': 'Bearer wrong'})]
    lone_surrogate = b'Authorization: Bearer \xed\xb2\x80\r\n\r\n'  # UTF-8 style
    out.append(str(status_of(raw(t.url, t.head('GET', '/v1/labels') + lone_surrogate))))
    out.append(post(t, t.clip, headers={'Origin': 'http://evil.example'}))
    out.append(str(s.get(t.url + '/healthz', headers={'Host': 'evil.example'},
                         timeout=30).status_code))
    for headers in ([], [token, 'Origin: http://evil.example'], [token, 'Host: evil.example']):
        ws = RawWebSocket(t.url, headers)
        out.append(str(ws.status))
        ws.close()
    return out


def random_methods(t, n=6):
    """n requests with made-up methods -> 405 each."""
    s = http()
    return [str(s.request('X' + ''.join(random.choices('ABCDEFGHIJKLMNOP', k=8)),
                          t.url + '/healthz', timeout=30).status_code) for _ in range(n)]


def leave_mid_request(t):
    """Half an upload, then gone; a whole upload, gone while it is decoded -> 'left'
    (the server counts the second in tsm_predict_rejected_total{reason="client_gone"})."""
    body, ctype = multipart({}, 'clip.mp4', t.clip)
    head = t.head('POST', '/v1/predict', [
        f'Authorization: Bearer {t.token}', f'Content-Type: {ctype.decode()}',
        f'Content-Length: {len(body)}']) + b'\r\n'
    for part, wait in ((body[:len(body) // 2], 0.2), (body, 0.1)):
        with socket.create_connection((t.host, t.port), timeout=10) as sock:
            sock.sendall(head + part)
            time.sleep(wait)
    return ['left', 'left']


# ---- WebSocket ----

def session(t):
    """A raw online session with the token -> RawWebSocket, or None with no slot free."""
    ws = RawWebSocket(t.url, [f'Authorization: Bearer {t.token}'])
    if ws.status == 101 and json.loads(ws.message()[1]).get('ready'):
        return ws
    ws.close()
    return None


def ws_bombs(t):
    """A 30000 x 30000 PNG and a 4000 x 60 one -> an error answer each, the session goes
    on; a 3 MiB message -> closed with 1009."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    out = []
    with connect(t.ws_url, additional_headers=t.auth, open_timeout=30) as ws:
        if not json.loads(ws.recv(30)).get('ready'):
            return ['no slot']
        for bomb in (bomb_png(30000, 30000), bomb_png(4000, 60)):
            ws.send(bomb)
            out.append('error answer' if 'error' in json.loads(ws.recv(60)) else 'answered')
        ws.send(b'\0' * (3 << 20))
        try:
            ws.recv(60)
            out.append('read 3 MiB')
        except ConnectionClosed as e:
            out.append(f'close {e.rcvd.code if e.rcvd else None}')
    return out


def held_until_freed(t, ws, seconds):
    """Hold a session that reads nothing for `seconds`, then see whether a new session
    gets the slot while it is still held -> 'slot freed' / 'slot held'."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and not t.stop.is_set():
        time.sleep(1)
    if t.stop.is_set():
        return 'stopped'
    probe = session(t)
    if probe:
        probe.close()
    return 'slot freed' if probe else 'slot held'


def ws_ping_flood(t):
    """Pings, never reading -> the server stops reading (under 32 MiB of 128 MiB);
    --send_timeout later the connection is reset and the slot freed."""
    ws = session(t)
    if ws is None:
        return ['no slot']
    try:
        sent = ws.flood(masked(0x9, b'p' * 125))
        out = ['stopped reading' if sent < 32 << 20 else 'read it all']
        return out + [held_until_freed(t, ws, t.limits['send_timeout'] + 15)]
    finally:
        ws.close()


def ws_never_reads(t):
    """20 frames sent, no answer read, then silence -> the session is closed at
    --ws_idle_timeout and its slot freed."""
    ws = session(t)
    if ws is None:
        return ['no slot']
    try:
        frame = masked(0x2, t.frame)
        for _ in range(20):
            ws.sock.sendall(frame)
        return [held_until_freed(t, ws, t.limits['ws_idle_timeout'] + 15)]
    finally:
        ws.close()


LANES = {
    'connections': [slowloris_heads, slow_bodies, idle_connections],
    'uploads': [tiny_windows, y4m_bombs, png_as_video, playlists_as_mp4, bad_credentials,
                random_methods, leave_mid_request],
    'websocket': [ws_bombs, ws_ping_flood, ws_never_reads],
}
EXPECTED = {  # what each attack should get
    'slowloris_heads': {'408'}, 'slow_bodies': {'408'}, 'idle_connections': {'closed'},
    'tiny_windows': {'422'}, 'y4m_bombs': {'422'}, 'png_as_video': {'422'},
    'playlists_as_mp4': {'422'}, 'bad_credentials': {'400', '401', '403'},
    'random_methods': {'405'}, 'leave_mid_request': {'left'},
    'ws_bombs': {'error answer', 'close 1009'}, 'ws_ping_flood': {'stopped reading', 'slot freed'},
    'ws_never_reads': {'slot freed'},
}


def run_lane(t, attacks, tally, pause=0.5):
    """Go round `attacks` until the stop event; each outcome is counted in `tally`
    (kind -> outcome -> count)."""
    while not t.stop.is_set():
        for attack in attacks:
            if t.stop.is_set():
                return
            try:
                outcomes = attack(t)
            except Exception as e:  # the client failed: counted, the lane goes on
                outcomes = [f'client error: {type(e).__name__}']
            tally.add(attack.__name__, outcomes)
            time.sleep(pause)
