"""The camera mode's per-frame model: the online model (models/online.py) exported for the
server's engine and precision as predict.py --online gets it (inference.loading.
online_for_inference: cached export, checked against the eager online model), loaded
once.  Each WebSocket session gets a stream of its own (OnlineStream): its states and
window are never shared; the engine's calls are serialised on the model thread."""
import logging

import numpy as np

from inference.loading import online_for_inference
from reader import clip_shape

logger = logging.getLogger(__name__)


class OnlineModel:
    """streams(window) -> a new OnlineStream; `engine`: what runs it (describe())."""

    def __init__(self, model, args, cfg, weights):
        self.streams, self.engine = online_for_inference(model, args, cfg, 'INFER', weights)
        self.frame_shape = [1, *clip_shape(cfg, 'INFER', online=True)]  # one frame
        logger.info("camera mode: online model on %s, %s", self.engine['engine'],
                    self.engine['precision'])

    def warm(self):
        """One frame through a throwaway stream (allocations, kernels)."""
        self.streams(1).step(np.zeros(self.frame_shape, np.float32))


def load(model, args, cfg, weights, available):
    """The OnlineModel when the weights can run online (`available`), else None."""
    return OnlineModel(model, args, cfg, weights) if available else None
