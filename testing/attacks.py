"""Raw clients that attack a served model: hand-made HTTP requests and WebSocket
frames on bare sockets, and crafted media (decompression bombs, lying headers)."""
import base64
import os
import socket
import struct
import zlib
from urllib.parse import urlparse


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
