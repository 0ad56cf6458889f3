"""The HTTP app: routes, bearer-token check, metrics, errors as JSON, the page.

    GET  /              the page (static/), no CDN
    GET  /healthz       200 once the model is loaded and warm
    POST /v1/predict    multipart: video (file), topk, window_seconds, stride_seconds, frames
    GET  /v1/labels     the class names
    GET  /v1/model      config, weights sha256, engine, precision, test protocol
    GET  /metrics       Prometheus text format
    WS   /v1/online     JPEG frames in, one online-TSM answer per frame out
"""
import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from . import streaming, uploads
from .batching import MicroBatcher
from .decode import DecodeFailed
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .online import FrameError, OnlineSession

logger = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
ROUTES = ('/', '/healthz', '/v1/predict', '/v1/labels', '/v1/model', '/metrics', '/v1/online',
          '/docs', '/openapi.json')
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'")
PREDICT_FORM = {'requestBody': {'required': True, 'content': {'multipart/form-data': {'schema': {
    'type': 'object', 'required': ['video'], 'properties': {
        'video': {'type': 'string', 'format': 'binary', 'description': 'the video file'},
        'topk': {'type': 'integer', 'description': 'classes per record (default MODEL.topk)'},
        'window_seconds': {'type': 'number', 'description': 'one record per window'},
        'stride_seconds': {'type': 'number', 'description': 'between window starts '
                                                            '(default window_seconds)'},
        'frames': {'type': 'boolean', 'description': 'also return the sampled frames as '
                                                      'JPEG data URLs'}}}}}}}


class Settings:
    """What serve.py's flags set beyond the model."""

    def __init__(self, token=None, max_upload_mb=200, max_queue=32, batch_wait_ms=5,
                 max_online=2, online_window=None):
        self.token, self.max_upload_bytes = token or None, int(max_upload_mb * 2 ** 20)
        self.max_queue, self.batch_wait_s = int(max_queue), batch_wait_ms / 1000
        self.max_online, self.online_window = int(max_online), online_window


def error(status, message, headers=None):
    return JSONResponse({'error': message, 'status': status}, status, headers=headers)


def route_of(path):
    """A bounded label for metrics: the route, '/static' or 'other'."""
    return path if path in ROUTES else '/static' if path.startswith('/static/') else 'other'


def needs_token(path):
    """The API and metrics; not the page, its files, /healthz or the OpenAPI docs."""
    return path.startswith('/v1/') or path == '/metrics'


def token_ok(expected, authorization):
    scheme, _, given = (authorization or '').partition(' ')
    return scheme.lower() == 'bearer' and hmac.compare_digest(given.strip().encode(),
                                                             expected.encode())


class Guard:
    """ASGI middleware: the bearer token on protected HTTP routes, and per-route request
    counts and latency (WebSockets check their token themselves: browsers cannot send
    headers on them)."""

    def __init__(self, app, token, metrics):
        self.app, self.token, self.metrics = app, token, metrics

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        route, t = route_of(scope['path']), time.perf_counter()
        status = [500]

        async def send_status(message):
            if message['type'] == 'http.response.start':
                status[0] = message['status']
            await send(message)
        try:
            headers = dict(scope['headers'])
            if (self.token and needs_token(scope['path'])
                    and not token_ok(self.token, headers.get(b'authorization', b'').decode('latin-1'))):
                await error(401, 'missing or wrong bearer token (Authorization: Bearer TOKEN)',
                            {'WWW-Authenticate': 'Bearer'})(scope, receive, send_status)
                return
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, scope['method'], str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t)


def parse_options(fields, service):
    """The form fields of /v1/predict -> (topk, decode options); HTTPException 422."""
    def number(name, kind):
        text = fields.get(name, '').strip()
        if not text:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise HTTPException(422, f"'{name}' must be a {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise HTTPException(422, f"'{name}' must be positive, got {text!r}")
        return value
    k = service.cfg.MODEL.num_classes
    topk = number('topk', int) or min(service.cfg.MODEL.topk, k)
    if topk > k:
        raise HTTPException(422, f"'topk' must be at most the {k} classes, got {topk}")
    window, stride = number('window_seconds', float), number('stride_seconds', float)
    if stride is not None and window is None:
        raise HTTPException(422, "'stride_seconds' needs 'window_seconds'")
    frames = fields.get('frames', '').strip().lower() in ('1', 'true', 'yes', 'on')
    return topk, {'window_seconds': window, 'stride_seconds': stride, 'with_frames': frames}


def _is_reset(text):
    """The page's {"reset": true}: start the stream afresh (caches and window emptied)."""
    try:
        return json.loads(text or '').get('reset') is True
    except (ValueError, AttributeError):
        return False


def create_app(service, pool, settings):
    """The app over a loaded Service and a DecodePool (both warm)."""
    metrics = Metrics(service.cfg.INFER.batch_size)
    model_thread = ThreadPoolExecutor(1, thread_name_prefix='model')
    batcher = MicroBatcher(service.probabilities, service.cfg.INFER.batch_size,
                           settings.batch_wait_s, model_thread, metrics.observe_batch)
    folder = uploads.private_folder()
    chunk = streaming.chunk_windows(service.clip_shape)
    state = {'in_flight': 0, 'online': 0, 'ready': True}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()
        pool.close()
        model_thread.shutdown(wait=False)
        shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title='TSM prediction server', lifespan=lifespan,
                  description='Video classification with the Temporal Shift Module. '
                              'With --token, /v1/* and /metrics need '
                              '`Authorization: Bearer TOKEN`.')
    app.state.metrics, app.state.upload_dir = metrics, folder
    pool.on_restart = metrics.decoder_restarts.inc
    app.add_middleware(Guard, token=settings.token, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, 'headers', None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = '.'.join(str(p) for p in first.get('loc', ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def internal(request, exc):  # logged with its traceback here, never sent
        logger.exception("internal error on %s", request.url.path)
        return error(500, 'internal error (see the server log)')

    @app.get('/', include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, 'index.html'),
                            headers={'Content-Security-Policy': PAGE_CSP})

    app.mount('/static', StaticFiles(directory=STATIC), name='static')

    @app.get('/healthz')
    async def healthz():
        if not state['ready']:
            return error(503, 'loading')
        return {'status': 'ok', 'model': service.model_name, **service.engine}

    @app.get('/v1/labels')
    async def labels():
        return {'num_classes': len(service.names), 'labels': service.names}

    @app.get('/v1/model')
    async def model():
        return {**service.describe(), 'max_upload_mb': settings.max_upload_bytes / 2 ** 20,
                'decode_workers': pool.workers, 'max_queue': settings.max_queue}

    @app.get('/metrics')
    async def metrics_text():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post('/v1/predict', openapi_extra=PREDICT_FORM)
    async def predict(request: Request):
        """The video of the form's `video` field -> predict_results.json's records
        (windows: one per window, with start and end), plus timings in seconds."""
        if state['in_flight'] >= settings.max_queue:
            metrics.rejected.labels('queue_full').inc()
            return error(503, f"busy: {settings.max_queue} requests in progress; retry shortly",
                         {'Retry-After': '1'})
        state['in_flight'] += 1
        metrics.in_flight.inc()
        t0 = time.perf_counter()
        try:
            return await _predict(request, t0)
        finally:
            state['in_flight'] -= 1
            metrics.in_flight.dec()

    async def _predict(request, t0):
        try:
            upload = await uploads.receive(request, folder, settings.max_upload_bytes)
        except uploads.UploadError as e:  # the rest of the body is not read: close after
            metrics.rejected.labels(str(e.status)).inc()
            raise HTTPException(e.status, str(e), {'Connection': 'close'}) from None
        t1 = time.perf_counter()
        try:
            topk, options = parse_options(upload.fields, service)
            decoded = await streaming.unless_client_leaves(request, streaming.classify(
                pool, batcher, upload.path, options, chunk, metrics.decoded_windows.inc))
        except DecodeFailed as e:
            metrics.rejected.labels('undecodable').inc()
            logger.info("refused an upload: %s", e)
            raise HTTPException(422, str(e)) from None
        except streaming.ClientGone:
            metrics.rejected.labels('client_gone').inc()
            return error(499, 'the client closed the connection')
        except asyncio.CancelledError:  # still running when SIGTERM's grace ran out
            return error(503, 'the server is shutting down', {'Connection': 'close'})
        finally:
            upload.remove()
        metrics.decode.observe(decoded['decode_s'])
        results = decoded['results']
        batches = list({id(info): info for _, info in results}.values())
        model_s = sum(b['model_s'] for b in batches)
        records = []
        for k, (probs, _) in enumerate(results):
            rec = {'path': upload.filename, **service.record(probs, topk)}
            if decoded['times'] is not None:
                rec['start'], rec['end'] = decoded['times'][k]
            records.append(rec)
        fps, n = decoded['fps'], decoded['num_frames']
        out = {'records': records,
               'video': {'num_frames': n, 'fps': fps, 'duration': round(n / fps, 3) if fps else None,
                         'bytes': upload.size},
               'timings': {'decode': round(decoded['decode_s'], 4), 'model': round(model_s, 4),
                           'queue': round(max(0.0, time.perf_counter() - t1 - model_s
                                                  - decoded['decode_s']), 4),
                           'total': round(time.perf_counter() - t0, 4)},
               'batch_sizes': [b['batch'] for b in batches]}
        if decoded['frames'] is not None:
            out['frames'] = decoded['frames']
        return out

    @app.websocket('/v1/online')
    async def online(ws: WebSocket):
        await ws.accept()
        loop = asyncio.get_running_loop()
        try:
            if settings.token and not token_ok(settings.token, ws.headers.get('authorization')):
                first = await asyncio.wait_for(ws.receive_text(), 10)
                try:
                    given = json.loads(first).get('token', '')
                except (ValueError, AttributeError):
                    given = ''
                if not token_ok(settings.token, f"Bearer {given}"):
                    await ws.close(1008, 'missing or wrong token')
                    return
            if not service.describe()['online']['available']:
                await ws.send_json({'error': 'online mode needs weights whose first fold looks '
                                             'back (MODEL.shift_direction backward), and seglen 1'})
                await ws.close(1011)
                return
            if state['online'] >= settings.max_online:
                await ws.send_json({'error': f"{settings.max_online} online sessions open; "
                                             "try again later"})
                await ws.close(1013)
                return
            state['online'] += 1
            metrics.online_sessions.inc()
            try:
                await _online(ws, loop)
            finally:
                state['online'] -= 1
                metrics.online_sessions.dec()
        except (WebSocketDisconnect, asyncio.TimeoutError):
            pass

    async def _online(ws, loop):
        session = await loop.run_in_executor(model_thread, OnlineSession, service,
                                             settings.online_window)
        info = service.describe()['online']
        await ws.send_json({'ready': True, 'window': session.window, **info})
        while True:
            message = await ws.receive()
            if message['type'] == 'websocket.disconnect':
                return
            if message.get('bytes') is not None:
                try:
                    answer = await loop.run_in_executor(model_thread, session.step,
                                                        message['bytes'])
                    metrics.online_frames.inc()
                except FrameError as e:
                    answer = {'error': str(e)}
                await ws.send_json(answer)
            elif _is_reset(message.get('text')):
                await loop.run_in_executor(model_thread, session.reset)
                await ws.send_json({'reset': True})

    return app
