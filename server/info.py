"""What the server says about itself: /healthz, /v1/labels, /v1/model, /metrics."""
import os

from fastapi.responses import Response

from .prometheus import CONTENT_TYPE_LATEST


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


def add_info_routes(app, service, pool, settings, metrics):
    """/healthz, /v1/labels, /v1/model, /metrics."""
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
