"""The HTTP app: routes, errors as JSON, the page; what every request passes first
(Host, Origin, token, body deadline, metrics) is guard.Guard.

    GET  /              the page (static/), no CDN
    GET  /healthz       200 {"status": "ok"} once the model is loaded and warm
    POST /v1/predict    multipart: video (file), topk, window_seconds, stride_seconds, frames
    GET  /v1/labels     the class names
    GET  /v1/model      config, weights sha256, engine, precision, test protocol
    GET  /metrics       Prometheus text format
    WS   /v1/online     JPEG frames in, one online-TSM answer per frame out (online.py)
    GET  /docs          the OpenAPI page, with --docs only (it loads Swagger from a CDN)
"""
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from . import streaming, uploads
from .batching import MicroBatcher
from .decode import DecodeFailed
from .guard import BodyTimeout, Guard, Policy, error
from .prometheus import CONTENT_TYPE_LATEST, Metrics
from .online import OnlineEndpoint

logger = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
ROUTES = ('/', '/healthz', '/v1/predict', '/v1/labels', '/v1/model', '/metrics', '/v1/online',
          '/docs', '/openapi.json')
PREDICT_FORM = {'requestBody': {'required': True, 'content': {'multipart/form-data': {'schema': {
    'type': 'object', 'required': ['video'], 'properties': {
        'video': {'type': 'string', 'format': 'binary', 'description': 'the video file'},
        'topk': {'type': 'integer', 'description': 'classes per record (default MODEL.topk)'},
        'window_seconds': {'type': 'number', 'description': 'one record per window'},
        'stride_seconds': {'type': 'number', 'description': 'between window starts '
                                                            '(default window_seconds)'},
        'frames': {'type': 'boolean', 'description': 'also return the sampled frames as '
                                                      'JPEG data URLs'}}}}}}}


@dataclasses.dataclass
class Settings:
    """What serve.py's flags set beyond the model and the connections (transport.Limits)."""
    token: str = None
    max_upload_mb: float = 200
    max_queue: int = 32
    batch_wait_ms: float = 5
    max_online: int = 2
    online_window: int = None
    allow_hosts: tuple = ()
    allow_origins: tuple = ()
    body_timeout: float = 30
    min_body_rate: float = 16 << 10   # bytes/s, averaged, once body_timeout has passed
    ws_idle_timeout: float = 60
    max_frame_pixels: int = 4096 * 4096
    docs: bool = False

    @property
    def max_upload_bytes(self):
        return int(self.max_upload_mb * 2 ** 20)

    @property
    def batch_wait_s(self):
        return self.batch_wait_ms / 1000


def route_of(path):
    """A bounded label for metrics: the route, '/static' or 'other'."""
    return path if path in ROUTES else '/static' if path.startswith('/static/') else 'other'


def without_paths(value):
    """`value` with every absolute path cut to its file name: what the server says
    about itself names no folder of its machine."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.basename(value.rstrip(os.sep)) or value
    return value


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


def add_error_handlers(app):
    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, 'headers', None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = '.'.join(str(p) for p in first.get('loc', ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(BodyTimeout)
    async def slow_body(request, exc):  # the rest of the body is not read: close after
        return error(408, str(exc), {'Connection': 'close'})

    @app.exception_handler(Exception)
    async def internal(request, exc):  # logged with its traceback here, never sent
        logger.exception("internal error on %s", request.url.path)
        return error(500, 'internal error (see the server log)')


def add_info_routes(app, service, pool, settings, metrics):
    """The page, its files, /healthz, /v1/labels, /v1/model, /metrics."""
    @app.get('/', include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, 'index.html'))  # its CSP: guard.secure_headers

    app.mount('/static', StaticFiles(directory=STATIC), name='static')

    @app.get('/healthz')
    async def healthz():  # no token needed, so nothing about the model
        return {'status': 'ok'}

    @app.get('/v1/labels')
    async def labels():
        return {'num_classes': len(service.names), 'labels': service.names}

    @app.get('/v1/model')
    async def model():
        return without_paths({**service.describe(), 'max_upload_mb': settings.max_upload_mb,
                              'decode_workers': pool.workers, 'max_queue': settings.max_queue})

    @app.get('/metrics')
    async def metrics_text():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)


def create_app(service, pool, settings):
    """The app over a loaded Service and a DecodePool (both warm)."""
    metrics = Metrics(service.cfg.INFER.batch_size)
    model_thread = ThreadPoolExecutor(1, thread_name_prefix='model')
    batcher = MicroBatcher(service.probabilities, service.cfg.INFER.batch_size,
                           settings.batch_wait_s, model_thread, metrics.observe_batch)
    online = OnlineEndpoint(service, settings, metrics, model_thread)
    folder = uploads.private_folder()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()
        pool.close()
        online.close()
        model_thread.shutdown(wait=False)
        shutil.rmtree(folder, ignore_errors=True)

    docs = {} if settings.docs else {'docs_url': None, 'redoc_url': None}
    app = FastAPI(title='TSM prediction server', lifespan=lifespan, **docs,
                  description='Video classification with the Temporal Shift Module. '
                              'With --token, /v1/* and /metrics need '
                              '`Authorization: Bearer TOKEN`.')
    app.state.metrics, app.state.upload_dir = metrics, folder
    pool.on_restart = metrics.decoder_restarts.inc
    app.add_middleware(Guard, policy=Policy(settings.token, settings.allow_hosts,
                                            settings.allow_origins),
                       metrics=metrics, route_of=route_of, body_timeout=settings.body_timeout,
                       min_body_rate=settings.min_body_rate)
    add_error_handlers(app)
    add_info_routes(app, service, pool, settings, metrics)
    app.add_api_websocket_route('/v1/online', online)
    add_predict_route(app, service, pool, settings, metrics, batcher, folder)
    return app


def add_predict_route(app, service, pool, settings, metrics, batcher, folder):
    """POST /v1/predict: at most settings.max_queue at once, counted once the body is in;
    the windows decoded and classified in chunks (streaming.py)."""
    state = {'in_flight': 0}
    chunk = streaming.chunk_windows(service.clip_shape)

    def busy():
        metrics.rejected.labels('queue_full').inc()
        return error(503, f"busy: {settings.max_queue} requests in progress; retry shortly",
                     {'Retry-After': '1'})

    @app.post('/v1/predict', openapi_extra=PREDICT_FORM)
    async def predict(request: Request):
        """The video of the form's `video` field -> predict_results.json's records
        (windows: one per window, with start and end), plus timings in seconds."""
        if state['in_flight'] >= settings.max_queue:  # refused before reading the body
            return busy()
        t0 = time.perf_counter()
        upload = await receive(request)  # no queue slot held: a slow upload blocks no other
        try:
            if state['in_flight'] >= settings.max_queue:
                return busy()
            state['in_flight'] += 1
            metrics.in_flight.inc()
            try:
                return await _predict(request, upload, t0)
            finally:
                state['in_flight'] -= 1
                metrics.in_flight.dec()
        finally:
            upload.remove()

    async def receive(request):
        try:
            return await uploads.receive(request, folder, settings.max_upload_bytes)
        except uploads.UploadError as e:  # the rest of the body is not read: close after
            metrics.rejected.labels(str(e.status)).inc()
            raise HTTPException(e.status, str(e), {'Connection': 'close'}) from None

    async def _predict(request, upload, t0):
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
