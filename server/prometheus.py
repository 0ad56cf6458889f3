"""Prometheus metrics of one server (a registry of its own, so two apps in one process
never share counts), served at /metrics in the Prometheus text format."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (the /metrics media type)
from prometheus_client import disable_created_metrics

LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
METHODS = frozenset({'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'})


def method_label(method):
    """The HTTP method, or 'other' for any outside RFC 9110's common ones: a client may
    send any token as a method, and each label value is a series kept for good."""
    return method if method in METHODS else 'other'


class Metrics:
    def __init__(self, max_batch):
        disable_created_metrics()  # no *_created series beside every counter
        r = self.registry = CollectorRegistry()
        self.requests = Counter('tsm_http_requests', 'HTTP requests by route, method and status',
                                ['route', 'method', 'status'], registry=r)
        self.latency = Histogram('tsm_http_request_duration_seconds',
                                 'Time from request to the end of the response, by route',
                                 ['route'], buckets=LATENCY_BUCKETS, registry=r)
        self.decode = Histogram('tsm_decode_duration_seconds',
                                'Decoding one upload in a worker process',
                                buckets=LATENCY_BUCKETS, registry=r)
        self.model = Histogram('tsm_model_batch_duration_seconds', 'One model call',
                               buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram('tsm_model_batch_size', 'Clips per model call',
                               buckets=tuple(range(1, max(1, max_batch) + 1)), registry=r)
        self.in_flight = Gauge('tsm_predict_in_flight', 'Predict requests being served',
                               registry=r)
        self.rejected = Counter('tsm_predict_rejected', 'Predict requests refused, by reason',
                                ['reason'], registry=r)
        self.decoder_restarts = Counter('tsm_decoder_restarts',
                                        'Decode pools restarted after a worker died', registry=r)
        self.online_sessions = Gauge('tsm_online_sessions', 'Open online (WebSocket) sessions',
                                     registry=r)
        self.online_frames = Counter('tsm_online_frames', 'Camera frames classified online',
                                     registry=r)
        self.decoded_windows = Counter('tsm_decoded_windows',
                                       'Windows (clips) decoded for predict requests', registry=r)

    def observe_batch(self, info):
        self.model.observe(info['model_s'])
        self.batch.observe(info['batch'])

    def text(self):
        return generate_latest(self.registry)
