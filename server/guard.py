"""What every request passes before a route sees it (one ASGI middleware, Guard):

    Host        a name this server answers to, so DNS rebinding cannot read its answers
    Origin      state-changing requests and WebSockets from another site are refused
    token       `Authorization: Bearer TOKEN` on /v1/* and /metrics (a WebSocket may carry
                it as the subprotocol `tsm.bearer.<base64url token>`: browsers cannot set
                headers on one), checked before any route runs or a WebSocket is accepted
    boundary    a multipart boundary longer than RFC 2046's 70 characters is a 400
    body        a deadline for the request body (a gap limit and a minimum average rate)
    answers     CSP with frame-ancestors on every HTML page, nosniff everywhere
    metrics     requests and latency per route and method, both bounded label sets
"""
import asyncio
import base64
import binascii
import hmac
import ipaddress
import time
from urllib.parse import urlsplit

from python_multipart.multipart import parse_options_header
from starlette.responses import JSONResponse

from .prometheus import method_label

SAFE_METHODS = frozenset({'GET', 'HEAD', 'OPTIONS'})
MAX_BOUNDARY = 70  # RFC 2046: 1 to 70 characters
TOKEN_PROTOCOL = 'tsm.bearer.'
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
# FastAPI's Swagger page (--docs) loads its script and style from a CDN, with one inline script
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: "
            "https://fastapi.tiangolo.com; object-src 'none'; frame-ancestors 'none'")
DEFAULT_PORTS = {'http': 80, 'https': 443, 'ws': 80, 'wss': 443}


class BodyTimeout(Exception):
    """The client sent its request body too slowly (the app answers 408)."""


def error(status, message, headers=None):
    return JSONResponse({'error': message, 'status': status}, status, headers=headers)


def shown(text, limit=80):
    """A client's value, quoted and cut, for an error message."""
    return repr(text[:limit] + ('...' if len(text) > limit else ''))


def split_host(value):
    """'name:port' / '[v6]:port' / 'name' -> (lower-case name, port or None); ValueError."""
    parts = urlsplit('//' + value)
    if parts.hostname is None or parts.username is not None or parts.path:
        raise ValueError(value)
    return parts.hostname.rstrip('.'), parts.port


def origin_of(url):
    """'scheme://host[:port]' -> (scheme, host, port), the default port filled in; ValueError."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ('', '/'):
        raise ValueError(url)
    return scheme, parts.hostname.rstrip('.'), parts.port or DEFAULT_PORTS[scheme]


def is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Policy:
    """Which Hosts and Origins a server accepts, and its token.

    A Host is accepted when it is an IP address (a browser that connected to an address
    names it: DNS rebinding needs a name the attacker controls), `localhost` or a name
    under it (browsers resolve those to loopback themselves), or one of `hosts` (serve.py:
    --host when it is a name, the machine's name when listening on every interface, and
    --allow_host); '*' accepts any.  An Origin is accepted when it is the page's own
    (scheme, Host and port of the request) or one of `origins` ('*': any); a request
    without one is not from a browser page, and is accepted."""

    def __init__(self, token=None, hosts=(), origins=()):
        self.token = token.encode() if token else None
        self.any_host = '*' in hosts
        self.hosts = {h.lower().rstrip('.') for h in hosts if h != '*'}
        self.any_origin = '*' in origins
        self.origins = {origin_of(o) for o in origins if o != '*'}

    def host_ok(self, value):
        if value is None or self.any_host:
            return True
        try:
            name, _ = split_host(value)
        except ValueError:
            return False
        return (is_ip(name) or name == 'localhost' or name.endswith('.localhost')
                or name in self.hosts)

    def origin_ok(self, value, scheme, host):
        if value is None or self.any_origin:
            return True
        try:
            origin = origin_of(value)
        except ValueError:  # 'null' (a sandboxed frame, a file), or garbage
            return False
        if origin in self.origins:
            return True
        if host is None:
            return False
        own = 'https' if scheme in ('https', 'wss') else 'http'
        name, port = split_host(host)
        return origin == (own, name, port or DEFAULT_PORTS[own])

    def token_ok(self, authorization=b'', subprotocols=()):
        """The bearer token of an Authorization header value (bytes) or of a WebSocket
        subprotocol; compared in constant time."""
        if self.token is None:
            return True
        scheme, _, given = authorization.partition(b' ')
        if scheme.lower() == b'bearer' and hmac.compare_digest(given.strip(), self.token):
            return True
        for p in subprotocols:
            if p.startswith(TOKEN_PROTOCOL):
                text = p[len(TOKEN_PROTOCOL):]
                try:
                    given = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))
                except (binascii.Error, ValueError):
                    continue
                if hmac.compare_digest(given, self.token):
                    return True
        return False


def needs_token(path):
    """The API and metrics; not the page, its files, /healthz or the OpenAPI docs."""
    return path.startswith('/v1/') or path == '/metrics'


def header(scope, name):
    """The first value of a request header (bytes), or None."""
    for key, value in scope['headers']:
        if key == name:
            return value
    return None


def refusal(policy, scope):
    """(status, message, headers) for a request refused before any route, or None."""
    host = header(scope, b'host')
    host = None if host is None else host.decode('latin-1')
    if not policy.host_ok(host):
        return 400, f"the Host {shown(host)} is not a name this server answers to (--allow_host)", None
    websocket = scope['type'] == 'websocket'
    origin = header(scope, b'origin')
    if ((websocket or scope['method'] not in SAFE_METHODS)
            and not policy.origin_ok(None if origin is None else origin.decode('latin-1'),
                                     scope['scheme'], host)):
        return 403, (f"cross-origin request from {shown(origin.decode('latin-1'))} refused "
                     "(--allow_origin)"), None
    if needs_token(scope['path']) and not policy.token_ok(header(scope, b'authorization') or b'',
                                                          scope.get('subprotocols', ())):
        return 401, 'missing or wrong bearer token (Authorization: Bearer TOKEN)', \
            {'WWW-Authenticate': 'Bearer'}
    if not websocket:
        return form_refusal(header(scope, b'content-type'))
    return None


def form_refusal(content_type):
    """A multipart boundary python-multipart would choke on: over RFC 2046's 70 characters."""
    if content_type is None:
        return None
    ctype, params = parse_options_header(content_type)
    if ctype == b'multipart/form-data' and len(params.get(b'boundary', b'')) > MAX_BOUNDARY:
        return 400, f"the multipart boundary is over {MAX_BOUNDARY} characters", None
    return None


class BodyDeadline:
    """An ASGI `receive` that raises BodyTimeout when the body stalls: no chunk for
    `gap_s`, or an average under `min_rate` bytes/s once `gap_s` has passed.  Once the
    body is in, it waits without a limit (a route may listen for the disconnect)."""

    def __init__(self, receive, gap_s, min_rate):
        self.receive, self.gap_s, self.min_rate = receive, gap_s, min_rate
        self.start, self.received, self.done = time.monotonic(), 0, False

    async def __call__(self):
        if self.done:
            return await self.receive()
        allowed = self.start + self.gap_s + self.received / self.min_rate - time.monotonic()
        wait = min(self.gap_s, allowed)
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(self.receive(), wait)
        except asyncio.TimeoutError:
            raise BodyTimeout(f"the request body came too slowly ({self.received} bytes in "
                              f"{time.monotonic() - self.start:.0f} s)") from None
        if message['type'] != 'http.request' or not message.get('more_body', False):
            self.done = True
        self.received += len(message.get('body', b''))
        return message


def has_body(scope):
    """Whether the request announced a body (a length over 0, or chunks)."""
    length = header(scope, b'content-length')
    return (length is not None and length.strip() not in (b'', b'0')) or \
        header(scope, b'transfer-encoding') is not None


def secure_headers(path, headers):
    """The response headers plus nosniff, and the CSP on HTML."""
    names = {k.lower() for k, _ in headers}
    out = list(headers)
    if b'x-content-type-options' not in names:
        out.append((b'x-content-type-options', b'nosniff'))
    ctype = dict((k.lower(), v) for k, v in headers).get(b'content-type', b'')
    if ctype.startswith(b'text/html') and b'content-security-policy' not in names:
        csp = DOCS_CSP if path == '/docs' else PAGE_CSP
        out += [(b'content-security-policy', csp.encode()), (b'x-frame-options', b'DENY')]
    return out


class Guard:
    """The ASGI middleware (see the module docstring): body_timeout in s, min_body_rate
    in bytes/s.  An answer sent before the body was read closes the connection (uvicorn
    would otherwise read the rest of it, however slowly it came)."""

    def __init__(self, app, policy, metrics, route_of, body_timeout, min_body_rate):
        self.app, self.policy, self.metrics, self.route_of = app, policy, metrics, route_of
        self.body_timeout, self.min_body_rate = body_timeout, min_body_rate

    async def __call__(self, scope, receive, send):
        if scope['type'] not in ('http', 'websocket'):
            return await self.app(scope, receive, send)
        refused = refusal(self.policy, scope)
        if scope['type'] == 'websocket':
            if refused:
                return await refuse_websocket(scope, receive, send, *refused)
            return await self.app(scope, receive, send)
        await self.http(scope, receive, send, refused)

    async def http(self, scope, receive, send, refused):
        route, t = self.route_of(scope['path']), time.perf_counter()
        status = [500]

        deadline = BodyDeadline(receive, self.body_timeout, self.min_body_rate)

        async def send_secured(message):
            if message['type'] == 'http.response.start':
                status[0] = message['status']
                headers = secure_headers(scope['path'], message.get('headers', []))
                if has_body(scope) and not deadline.done:  # nothing would bound the rest
                    headers = [(k, v) for k, v in headers if k.lower() != b'connection']
                    headers.append((b'connection', b'close'))
                message = {**message, 'headers': headers}
            await send(message)
        try:
            if refused:
                extra = {'Connection': 'close'}  # the body, if any, is not read
                await error(refused[0], refused[1], {**(refused[2] or {}), **extra})(
                    scope, receive, send_secured)
                return
            await self.app(scope, deadline, send_secured)
        finally:
            self.metrics.requests.labels(route, method_label(scope['method']), str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t)


async def refuse_websocket(scope, receive, send, status, message, headers=None):
    """Refuse a WebSocket handshake: an HTTP answer with a JSON error where the server
    supports it (the ASGI websocket.http.response extension), else a plain 403."""
    if 'websocket.http.response' in (scope.get('extensions') or {}):
        await error(status, message, headers)(scope, receive, send)
    else:
        await send({'type': 'websocket.close', 'code': 1008, 'reason': message[:120]})
