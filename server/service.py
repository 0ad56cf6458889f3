"""The model a server serves, loaded as predict.py loads it (inference.loading:
load_for_inference, then for_inference's engine; the label list), and what /v1/model
says about it."""
import logging
import os

import numpy as np
import paddle

from inference.loading import for_inference, load_for_inference
from reader import clip_shape
from reader.inputs import PROTOCOL_KEYS, protocol_text, read_labels
from training.evaluate import video_log_probs
from utils.download import sha256sum

from . import online_engine

logger = logging.getLogger(__name__)

def engine_info(net):
    """{'engine', 'precision', ...} of what for_inference returned: an engine's runner
    describes itself; the eager model runs float32."""
    describe = getattr(net, 'describe', None)
    return dict(describe()) if callable(describe) else {'engine': 'eager', 'precision': 'fp32'}


class Service:
    """cfg, class names, the engine (`net`) and the camera mode's online model (`online`,
    server/online_engine.py; None when the weights cannot run online)."""

    def __init__(self, args, cfg):
        loaded = load_for_inference(args, cfg, 'infer')
        model, weights = loaded.model, loaded.weights
        self.names = read_labels(cfg.INFER.kinetics_labels, cfg.MODEL.num_classes)
        self.cfg, self.model_name = cfg, args.model_name.upper()
        self.net = for_inference(model, args, cfg, 'INFER', weights)
        self.engine = engine_info(self.net)
        self.options = model.options()
        self.online = online_engine.load(model, args, cfg, weights,
                                         self.describe_online()['available'])
        self.weights = {'file': os.path.basename(weights), 'sha256': sha256sum(weights)}
        self.config_file = os.path.basename(args.config)
        logger.info("serving %s: %s, engine %s, precision %s", self.model_name,
                    self.weights['file'], self.engine['engine'], self.engine['precision'])

    @property
    def clip_shape(self):
        """One item of the reader: [T, 3L, S, S], or [V, T, 3L, S, S] with V views."""
        return clip_shape(self.cfg, 'INFER', views=True)

    @paddle.no_grad()
    def probabilities(self, clips):
        """list of clips (reader items) -> list of float64 class probabilities [K]."""
        x = paddle.to_tensor(np.stack(clips))  # -> [B, (V,) T, 3L, S, S]
        return list(np.exp(video_log_probs(self.net, x, self.cfg.INFER.average)))

    def warm(self):
        """One model call before the first request (allocations, oneDNN kernels)."""
        self.probabilities([np.zeros(self.clip_shape, np.float32)])
        if self.online is not None:
            self.online.warm()

    def record(self, probs, topk):
        """The record of predict_results.json (path added by the caller)."""
        order = np.argsort(-probs)[:topk]
        return {'top_names': [self.names[i] for i in order],
                'top_indices': [int(i) for i in order],
                'top_probs': [float(probs[i]) for i in order]}

    def describe(self):
        """What /v1/model answers."""
        cfg, sec = self.cfg, self.cfg.INFER
        return {
            'model_name': self.model_name,
            'config': {'file': self.config_file, 'MODEL': dict(cfg.MODEL)},
            'options': self.options,
            'weights': self.weights,
            **self.engine,
            'protocol': {'text': protocol_text(sec, cfg.MODEL.seg_num),
                         **{k: sec[k] for k in PROTOCOL_KEYS}},
            'num_classes': cfg.MODEL.num_classes,
            'batch_size': sec.batch_size,
            'video_timeout': sec.video_timeout,
            'online': self.describe_online(),
        }

    def describe_online(self):
        """Whether the camera mode can run these weights, and on what."""
        direction = self.options['shift_direction']
        info = {'available': direction != 'mit' and self.cfg.MODEL.seglen == 1,
                'trained_for_online': direction == 'backward', 'shift_direction': direction}
        online = getattr(self, 'online', None)
        if online is not None:
            info['engine'] = {k: online.engine[k] for k in ('engine', 'precision')}
        return info
