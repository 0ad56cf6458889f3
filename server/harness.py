"""A served model in a subprocess, headless Chromium to look at its page, and the raw
clients that attack it (hand-made requests, WebSockets and media): what the tests,
bench/serve.py and tools/serve_screenshot.py share.

    with Served(['--config', cfg, '--weights', w]).wait() as s:  # serve.py --port 0 ...
        urllib.request.urlopen(s.url + '/healthz')
"""
import base64
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from urllib.parse import urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = re.compile(r'serving on (http://\S+) ')
CHROMIUM_HINT = ('Chromium is not installed: the browser tests were left out (Debian/Ubuntu: '
                 'sudo apt-get install chromium chromium-driver)')


class Served:
    """`python serve.py --port 0 ARGS`, started at once (several can start side by side);
    wait() until it is healthy; stop() ends it."""

    def __init__(self, args, env=None, timeout=180):
        self.lines, self.url = [], None
        full_env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONWARNINGS='ignore', **(env or {}))
        self.proc = subprocess.Popen([sys.executable, 'serve.py', '--port', '0', *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env, start_new_session=True)
        self._found = threading.Event()
        self._timeout = timeout

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = SERVING.search(line)
                if m and self.url is None:
                    self.url = m.group(1)
                    self._found.set()
            self._found.set()
        threading.Thread(target=read, daemon=True).start()

    def wait(self):
        """Block until /healthz answers 200 (RuntimeError with the log if it never does);
        -> self."""
        until = time.monotonic() + self._timeout
        if not self._found.wait(self._timeout) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + self.log[-4000:])
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > until:
                self.stop()
                raise RuntimeError("the server never became healthy:\n" + self.log[-4000:])
            time.sleep(0.1)
        return self

    @property
    def log(self):
        return ''.join(self.lines)

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + '/healthz', timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout=20):
        """SIGTERM (uvicorn shuts down cleanly), SIGKILL to the group if it lingers;
        -> the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def chromium():
    """(chromium, chromedriver) executables, or None when either is missing."""
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    return (browser, driver) if browser and driver else None


def chromium_driver(fake_camera=False, size=(1100, 1400)):
    """A Selenium driver of headless Debian Chromium with a fresh profile, quiet (no
    network of its own); fake_camera: a generated camera feed, allowed without asking.
    The profile folder goes when the driver quits (driver.profile_dir)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = chromium()
    profile = tempfile.mkdtemp(prefix='tsm-chromium-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic',
                 '--disable-default-apps', '--disable-extensions',
                 f'--user-data-dir={profile}', f'--window-size={size[0]},{size[1]}'):
        opts.add_argument(flag)
    if fake_camera:
        opts.add_argument('--use-fake-ui-for-media-stream')
        opts.add_argument('--use-fake-device-for-media-stream')
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.profile_dir = profile
    quit_ = d.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    d.quit = quit_and_clean
    return d


# ---- hostile clients (tests/test_server_transport.py, test_server_budgets.py, the soak) ----

def address(url):
    """http://host:port -> (host, port)."""
    u = urlparse(url)
    return u.hostname, u.port


def raw(url, data, timeout=20, rcvbuf=None):
    """Send bytes on a fresh connection, read until the server closes; -> what it sent."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(address(url))
    try:
        sock.sendall(data)
        out = b''
        while True:
            more = sock.recv(65536)
            if not more:
                return out
            out += more
    finally:
        sock.close()


def status_of(answer):
    """The status code of a raw HTTP answer."""
    return int(answer.split(b' ', 2)[1])


def masked(opcode, payload):
    """A client WebSocket frame (FIN set, masked, payload up to 125 bytes or 64 KiB)."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else
                                     bytes([0x80 | 126]) + n.to_bytes(2, 'big'))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    """A WebSocket client on a bare socket with a small receive buffer: it chooses when,
    and whether, to read."""

    def __init__(self, url, headers=(), rcvbuf=4096, timeout=10):
        host, port = address(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        named = any(h.lower().startswith('host:') for h in headers)
        own_host = [] if named else [f'Host: {host}:{port}']
        head = ['GET /v1/online HTTP/1.1', *own_host, 'Upgrade: websocket',
                'Connection: Upgrade', 'Sec-WebSocket-Version: 13',
                'Sec-WebSocket-Key: ' + base64.b64encode(os.urandom(16)).decode(), *headers]
        self.sock.sendall(('\r\n'.join(head) + '\r\n\r\n').encode())
        self.buf = b''
        while b'\r\n\r\n' not in self.buf:
            more = self.sock.recv(1)
            if not more:
                raise ConnectionError('closed during the handshake')
            self.buf += more
        self.status = status_of(self.buf)
        self.buf = b''

    def message(self):
        """The next server frame -> (opcode, payload)."""
        while True:
            if len(self.buf) >= 2:
                n, at = self.buf[1] & 0x7f, 2
                if n == 126:
                    n, at = int.from_bytes(self.buf[2:4], 'big'), 4
                if len(self.buf) >= at + n:
                    op, data, self.buf = self.buf[0] & 0x0f, self.buf[at:at + n], self.buf[at + n:]
                    return op, data
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError('closed')
            self.buf += more

    def flood(self, frame, limit=128 << 20):
        """Send `frame` over and over without reading until the server stops taking them
        (a send blocks for the socket timeout, or the connection is reset); -> bytes sent."""
        chunk, sent = frame * max(1, 65536 // len(frame)), 0
        try:
            while sent < limit:
                self.sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # timeout (the server reads no more) or reset
            pass
        return sent

    def close(self):
        self.sock.close()


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def bomb_png(width, height):
    """A 1-bit grey PNG of zeros: width x height pixels in a few hundred KB."""
    z = zlib.compressobj(9)
    row = b'\0' * (1 + (width + 7) // 8)
    idat = b''.join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + bytes([1, 0, 0, 0, 0])
    return (PNG_SIGNATURE + png_chunk(b'IHDR', ihdr) + png_chunk(b'IDAT', idat)
            + png_chunk(b'IEND', b''))


def png_chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def png_header_only(width, height):
    """A PNG that declares width x height (8-bit RGB) with one row of image data."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b'IHDR', ihdr)
            + png_chunk(b'IDAT', zlib.compress(b'\0' * (3 * width + 1))) + png_chunk(b'IEND', b''))


def y4m(width, height, rate='25:1', frames=1, data=True):
    """A YUV4MPEG2 stream (4:2:0): a header that says what it likes, then `frames`
    frames (their data only when `data`)."""
    head = f'YUV4MPEG2 W{width} H{height} F{rate} Ip A1:1 C420jpeg\n'.encode()
    size = width * height * 3 // 2 if data else 16
    return head + (b'FRAME\n' + b'\x80' * size) * frames


def multipart(fields, filename, data, boundary=b'b0undary'):
    """A multipart/form-data body: the text fields, then the video -> (body, type)."""
    parts = [b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
             % (boundary, k.encode(), v.encode()) for k, v in fields.items()]
    parts.append(b'--%s\r\nContent-Disposition: form-data; name="video"; filename="%s"\r\n'
                 b'Content-Type: video/mp4\r\n\r\n' % (boundary, filename.encode())
                 + data + b'\r\n--%s--\r\n' % boundary)
    return b''.join(parts), b'multipart/form-data; boundary=' + boundary
