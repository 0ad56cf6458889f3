"""The HTTP app: create_app lists what it has; what every request passes first (Host,
Origin, token, body deadline, metrics) is guard.Guard.

    GET  /              the page (page.py, static/), no CDN
    GET  /healthz       200 {"status": "ok"} once the model is loaded and warm (info.py)
    POST /v1/predict    multipart: video (file), topk, window_seconds, stride_seconds, frames
                        (predict.py)
    GET  /v1/labels     the class names (info.py)
    GET  /v1/model      config, weights sha256, engine, precision, test protocol (info.py)
    GET  /metrics       Prometheus text format (info.py)
    WS   /v1/online     JPEG frames in, one online-TSM answer per frame out (online.py)
    GET  /docs          the OpenAPI page, with --docs only (it loads Swagger from a CDN)
"""
import contextlib
import dataclasses
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from . import uploads
from .batching import MicroBatcher
from .guard import BodyTimeout, Guard, Policy, error
from .info import add_info_routes
from .online import OnlineEndpoint
from .page import add_page_routes
from .predict import PredictRoute
from .prometheus import Metrics

logger = logging.getLogger(__name__)

ROUTES = ('/', '/healthz', '/v1/predict', '/v1/labels', '/v1/model', '/metrics', '/v1/online',
          '/docs', '/openapi.json')
DESCRIPTION = ('Video classification with the Temporal Shift Module. With --token, /v1/* and '
               '/metrics need `Authorization: Bearer TOKEN`.')


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


class Shared:
    """What the routes share, closed by the app's lifespan: the metrics, the model thread
    (every model call, one at a time), the micro-batcher, the online endpoint and the
    uploads' private folder."""

    def __init__(self, service, pool, settings):
        batch = service.cfg.INFER.batch_size
        self.pool, self.metrics = pool, Metrics(batch)
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix='model')
        self.batcher = MicroBatcher(service.probabilities, batch, settings.batch_wait_s,
                                    self.model_thread, self.metrics.observe_batch)
        self.online = OnlineEndpoint(service, settings, self.metrics, self.model_thread)
        self.folder = uploads.private_folder()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        yield
        await self.batcher.stop()
        self.pool.close()
        self.online.close()
        self.model_thread.shutdown(wait=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def add_guard(app, settings, metrics):
    """guard.Guard in front of every route."""
    app.add_middleware(Guard, policy=Policy(settings.token, settings.allow_hosts,
                                            settings.allow_origins),
                       metrics=metrics, route_of=route_of, body_timeout=settings.body_timeout,
                       min_body_rate=settings.min_body_rate)


def add_error_handlers(app):
    """Every error as JSON {'error', 'status'}; an unexpected one's traceback only in the log."""
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


def create_app(service, pool, settings):
    """The app over a loaded Service and a DecodePool (both warm)."""
    shared = Shared(service, pool, settings)
    docs = {} if settings.docs else {'docs_url': None, 'redoc_url': None}
    app = FastAPI(title='TSM prediction server', lifespan=shared.lifespan, **docs,
                  description=DESCRIPTION)
    app.state.metrics, app.state.upload_dir = shared.metrics, shared.folder
    pool.on_restart = shared.metrics.decoder_restarts.inc
    add_guard(app, settings, shared.metrics)
    add_error_handlers(app)
    add_page_routes(app)
    add_info_routes(app, service, pool, settings, shared.metrics)
    app.add_api_websocket_route('/v1/online', shared.online)
    PredictRoute(service, pool, shared.batcher, settings, shared.metrics,
                 shared.folder).add_to(app)
    return app
