"""POST /v1/predict: an uploaded video through the decode workers and the micro-batcher
(streaming.py) -> predict_results.json's records, plus the video's facts and timings.
At most --max_queue requests at once, counted once the body is in; the route owns the
upload's file and removes it once, however the request ends."""
import asyncio
import logging
import math
import time

from fastapi import Request
from starlette.exceptions import HTTPException

from . import streaming, uploads
from .guard import error
from .limits import DecodeFailed

# the app's log lines keep one logger name, whichever route writes them
logger = logging.getLogger('server.app')

PREDICT_FORM = {'requestBody': {'required': True, 'content': {'multipart/form-data': {'schema': {
    'type': 'object', 'required': ['video'], 'properties': {
        'video': {'type': 'string', 'format': 'binary', 'description': 'the video file'},
        'topk': {'type': 'integer', 'description': 'classes per record (default MODEL.topk)'},
        'window_seconds': {'type': 'number', 'description': 'one record per window'},
        'stride_seconds': {'type': 'number', 'description': 'between window starts '
                                                            '(default window_seconds)'},
        'frames': {'type': 'boolean', 'description': 'also return the sampled frames as '
                                                      'JPEG data URLs'}}}}}}}


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


def answer(service, upload, decoded, topk, t0, t1):
    """streaming.classify's result -> the JSON answer: one record per window, the video,
    timings in seconds (t0: the request's start, t1: its body received), batch sizes."""
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


class PredictRoute:
    """The route over a Service, a DecodePool and a MicroBatcher; uploads go to `folder`."""

    def __init__(self, service, pool, batcher, settings, metrics, folder):
        self.service, self.pool, self.batcher = service, pool, batcher
        self.settings, self.metrics, self.folder = settings, metrics, folder
        self.in_flight = 0
        self.chunk = streaming.chunk_windows(service.clip_shape)

    def add_to(self, app):
        app.add_api_route('/v1/predict', self.predict, methods=['POST'],
                          openapi_extra=PREDICT_FORM)

    async def predict(self, request: Request):
        """The video of the form's `video` field -> predict_results.json's records
        (windows: one per window, with start and end), plus timings in seconds."""
        if self.in_flight >= self.settings.max_queue:  # refused before reading the body
            return self.busy()
        t0 = time.perf_counter()
        # no queue slot held while receiving: a slow upload blocks no other
        with await self.receive(request) as upload:  # the file's one owner from here
            if self.in_flight >= self.settings.max_queue:
                return self.busy()
            self.in_flight += 1
            self.metrics.in_flight.inc()
            try:
                return await self.classify(request, upload, t0)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.dec()

    def busy(self):
        self.metrics.rejected.labels('queue_full').inc()
        return error(503, f"busy: {self.settings.max_queue} requests in progress; retry shortly",
                     {'Retry-After': '1'})

    async def receive(self, request):
        """The body -> an Upload (uploads.receive removes its file when it fails)."""
        try:
            return await uploads.receive(request, self.folder, self.settings.max_upload_bytes)
        except uploads.UploadError as e:  # the rest of the body is not read: close after
            self.metrics.rejected.labels(str(e.status)).inc()
            raise HTTPException(e.status, str(e), {'Connection': 'close'}) from None

    async def classify(self, request, upload, t0):
        t1 = time.perf_counter()
        try:
            topk, options = parse_options(upload.fields, self.service)
            decoded = await streaming.unless_client_leaves(request, streaming.classify(
                self.pool, self.batcher, upload.path, options, self.chunk,
                self.metrics.decoded_windows.inc))
        except DecodeFailed as e:
            self.metrics.rejected.labels('undecodable').inc()
            logger.info("refused an upload: %s", e)
            raise HTTPException(422, str(e)) from None
        except streaming.ClientGone:
            self.metrics.rejected.labels('client_gone').inc()
            return error(499, 'the client closed the connection')
        except asyncio.CancelledError:  # still running when SIGTERM's grace ran out
            return error(503, 'the server is shutting down', {'Connection': 'close'})
        self.metrics.decode.observe(decoded['decode_s'])
        return answer(self.service, upload, decoded, topk, t0, t1)
