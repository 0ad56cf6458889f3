"""The connections under the app: uvicorn's settings, and the limits uvicorn lacks.

    Limits.max_connections     uvicorn's limit_concurrency: more get 503
    Limits.keep_alive_timeout  uvicorn's timeout_keep_alive: an idle connection closes
    Limits.header_timeout      the request line and headers must arrive within it, else
                               408 and close (HeadTimeoutH11; uvicorn has no such timer)
    Limits.send_timeout        a client that reads nothing of what the server sends for
                               this long loses its connection: TCP_USER_TIMEOUT on the
                               listening socket (Linux; accepted sockets inherit it), so
                               the kernel resets it and a stalled send fails
    BackpressuredWebSocket     reads no more while the client does not read: the pongs of
                               a ping flood wait in the client's socket, not in memory
    The body's deadline is the app's (guard.BodyDeadline): it can answer 408 in JSON.
"""
import dataclasses
import logging
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)
# the websockets library's protocol logs "connection rejected (403 Forbidden)" at INFO
HANDSHAKE_LOGGER = logging.getLogger(__name__ + '.websockets')
HANDSHAKE_LOGGER.setLevel(logging.WARNING)

HEAD_LATE = b'the request headers did not arrive in time\n'
REQUEST_TIMEOUT = (b'HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n'
                   b'content-length: %d\r\nconnection: close\r\n\r\n%s' % (len(HEAD_LATE), HEAD_LATE))


@dataclasses.dataclass
class Limits:
    max_connections: int = 64
    keep_alive_timeout: float = 5
    header_timeout: float = 10
    send_timeout: float = 30
    ws_max_size: int = 2 << 20
    ws_ping_interval: float = 20


def bound_sends(sock, seconds):
    """TCP_USER_TIMEOUT: data the peer leaves unacknowledged (a zero window included)
    for `seconds` resets the connection; -> whether the system supports it."""
    option = getattr(socket, 'TCP_USER_TIMEOUT', None)
    if option is None:
        logger.warning("this system has no TCP_USER_TIMEOUT: a client that stops reading "
                       "holds its connection until it closes it")
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    return True


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request's head: from the
    connection's start, or from the first byte of the next request on a kept-alive one
    (uvicorn's keep-alive timer covers the wait for that byte)."""

    head_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._head_timer, self._head_bytes = None, 0
        self._arm_head_timer()

    def data_received(self, data):
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # inside a request's head
            self._head_bytes += len(data)
            self._arm_head_timer()
        else:
            self._head_bytes = 0
            self._disarm_head_timer()

    def connection_lost(self, exc):
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self):
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def _disarm_head_timer(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self):
        self._head_timer = None
        if not self.transport.is_closing():
            if self._head_bytes:  # a silent connection just closes
                self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()


def head_timeout_protocol(seconds):
    """HeadTimeoutH11 with its deadline set (uvicorn builds protocols from a class)."""
    return type('HeadTimeoutH11', (HeadTimeoutH11,), {'head_timeout': float(seconds)})


class BackpressuredWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, reading only while writes flow: uvicorn
    answers each ping at once, so a client that pings and never reads would grow the
    write buffer without limit; here reading pauses when the buffer passes asyncio's
    high-water mark and resumes below its low one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn.logger = HANDSHAKE_LOGGER  # uvicorn logs each refusal already
        self.writes_paused = False  # uvicorn before 0.52.1 has no pause_writing of its own

    def pause_writing(self):
        super().pause_writing()
        self.writes_paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        super().resume_writing()
        self.writes_paused = False
        if not self.read_paused:  # uvicorn's own pause: a message waits for the app
            self.transport.resume_reading()

    def data_received(self, data):
        super().data_received(data)
        if self.writes_paused:  # the app's receive() may have resumed reading
            self.transport.pause_reading()


class NoClientTracebacks(logging.Filter):
    """uvicorn logs an ERROR with a traceback for a WebSocket text message that is not
    UTF-8 (it closes the connection with 1007): a client's error, kept to one warning line."""

    MESSAGES = ('Invalid UTF-8 sequence received from client.',)

    def filter(self, record):
        if record.msg in self.MESSAGES:
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, 'WARNING'
        return True


def uvicorn_config(app, limits):
    import uvicorn
    uvicorn_log = logging.getLogger('uvicorn.error')
    if not any(isinstance(f, NoClientTracebacks) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(NoClientTracebacks())
    return uvicorn.Config(app, log_config=None, lifespan='on', server_header=False,
                          http=head_timeout_protocol(limits.header_timeout),
                          ws=BackpressuredWebSocket, ws_max_size=limits.ws_max_size,
                          ws_ping_interval=limits.ws_ping_interval,
                          ws_ping_timeout=limits.ws_ping_interval,
                          limit_concurrency=limits.max_connections,
                          timeout_keep_alive=limits.keep_alive_timeout)
