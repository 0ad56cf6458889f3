"""Online TSM for the page's camera: each WebSocket session owns a stream of the server's
online model (server/online_engine.py: the exported per-frame model, its states and
window this session's only), and gets one answer per JPEG frame it sends.  Frames are
prepared as predict.py --online prepares them (INFER scaling, centre crop,
normalisation)."""
import time

import cv2
import numpy as np

from reader.transforms import eval_views, normalize

MAX_FRAME_BYTES = 2 << 20


class FrameError(ValueError):
    """A frame the session cannot read; the message goes back to the page."""


class OnlineSession:
    def __init__(self, service, window=None):
        m = service.cfg.MODEL
        self.cfg, self.names = service.cfg, service.names
        self.window = m.seg_num if window is None else window
        self.online = service.online.streams(self.window)
        self.frames = 0

    def step(self, data, topk=5):
        """JPEG/PNG bytes -> {'frame', 'class_index', 'class_name', 'probability', 'top',
        'model_ms' (the per-frame model), 'frame_ms' (decoding and preparing too)}."""
        t = time.perf_counter()
        if len(data) > MAX_FRAME_BYTES:
            raise FrameError(f"frame over {MAX_FRAME_BYTES} bytes")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError("the frame is not a JPEG or PNG image")
        sec, m = self.cfg.INFER, self.cfg.MODEL
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        try:
            view = eval_views(frame[None], sec.short_size, sec.target_size, 1,
                              sec.get('keep_ratio', False))[0]
        except ValueError as e:  # smaller than the crop
            raise FrameError(str(e)) from None
        x = normalize(view, m.image_mean, m.image_std, 1, 1)  # [1, 3, S, S]
        t_model = time.perf_counter()
        logits = self.online.step(x)[0]
        model_ms = 1000 * (time.perf_counter() - t_model)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:topk]
        self.frames += 1
        return {'frame': self.frames - 1, 'class_index': int(order[0]),
                'class_name': self.names[order[0]], 'probability': float(probs[order[0]]),
                'top': [{'class_index': int(i), 'class_name': self.names[i],
                         'probability': float(probs[i])} for i in order],
                'model_ms': round(model_ms, 2),
                'frame_ms': round(1000 * (time.perf_counter() - t), 2)}

    def reset(self):
        self.online.reset()
        self.frames = 0
