"""Online TSM for the page's camera over the WebSocket /v1/online: each session owns a
stream of the server's online model (server/online_engine.py: the exported per-frame
model, its states and window this session's only), and gets one answer per JPEG/PNG
frame it sends.  Frames are prepared as predict.py --online prepares them (INFER
scaling, centre crop, normalisation).

The token and the Origin are checked before the handshake (guard.Guard).  A frame's size
is read from its header and checked before it is decoded; decoding and scaling run on
threads of their own, the model on the model thread.  A session with no message for
--ws_idle_timeout is closed; one whose client stops reading loses its connection after
--send_timeout (transport.bound_sends), which frees its --max_online slot."""
import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from PIL import Image
from starlette.websockets import WebSocket, WebSocketDisconnect

from reader.transforms import frame_input

MAX_FRAME_BYTES = 2 << 20
MAX_FRAME_ASPECT = 4     # long side / short side: cameras give 4:3 and 16:9, either way up
SUBPROTOCOL = 'tsm.online'


class FrameError(ValueError):
    """A frame the session cannot read; the message goes back to the page."""


def check_frame(data, max_pixels):
    """The header of a JPEG/PNG (PIL reads only that) against the budgets; FrameError."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame over {MAX_FRAME_BYTES} bytes")
    too_big = FrameError(f"the frame is over {max_pixels} pixels (--max_frame_pixels)")
    try:
        with Image.open(io.BytesIO(data), formats=('JPEG', 'PNG')) as im:
            w, h = im.size
    except Image.DecompressionBombError:  # PIL's own cap, far above any camera's
        raise too_big from None
    except (OSError, ValueError):
        raise FrameError("the frame is not a JPEG or PNG image") from None
    if w * h > max_pixels:
        raise too_big
    if max(w, h) > MAX_FRAME_ASPECT * min(w, h):
        raise FrameError(f"frame {w}x{h} is more than {MAX_FRAME_ASPECT} times as long as wide")


def bytes_input(data, cfg, max_pixels):
    """JPEG/PNG bytes -> the model's input [1, 3, S, S], as predict.py --online makes it
    (reader.transforms.frame_input)."""
    check_frame(data, max_pixels)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameError("the frame is not a JPEG or PNG image")
    try:
        return frame_input(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cfg.INFER, cfg.MODEL)
    except ValueError as e:  # smaller than the crop
        raise FrameError(str(e)) from None


class OnlineSession:
    def __init__(self, service, window=None):
        m = service.cfg.MODEL
        self.cfg, self.names = service.cfg, service.names
        self.window = m.seg_num if window is None else window
        self.online = service.online.streams(self.window)
        self.frames = 0

    def step(self, x, topk=5, t0=None):
        """A bytes_input (prepared since t0, perf_counter) -> {'frame', 'class_index',
        'class_name', 'probability', 'top', 'model_ms' (the per-frame model), 'frame_ms'
        (decoding and preparing too)}."""
        t_model = time.perf_counter()
        t = t_model if t0 is None else t0
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


def is_reset(text):
    """The page's {"reset": true}: start the stream afresh (caches and window emptied)."""
    try:
        return json.loads(text or '').get('reset') is True
    except (ValueError, AttributeError):
        return False


class OnlineEndpoint:
    """The WebSocket route: at most settings.max_online sessions at once."""

    def __init__(self, service, settings, metrics, model_thread):
        self.service, self.settings, self.metrics = service, settings, metrics
        self.model_thread = model_thread
        self.frame_threads = ThreadPoolExecutor(settings.max_online, thread_name_prefix='frames')
        self.open = 0

    def close(self):
        self.frame_threads.shutdown(wait=False)

    def unavailable(self):
        """Why no session can start now (sent after the handshake, so the page shows it)."""
        if not self.service.describe()['online']['available']:
            return 1011, ('online mode needs weights whose first fold looks back '
                          '(MODEL.shift_direction backward), and seglen 1')
        if self.open >= self.settings.max_online:
            return 1013, f"{self.settings.max_online} online sessions open; try again later"
        return None

    async def __call__(self, ws: WebSocket):  # annotated: FastAPI reads the signature
        offered = ws.scope.get('subprotocols') or ()
        await ws.accept(SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            refused = self.unavailable()
            if refused:
                await ws.send_json({'error': refused[1]})
                await ws.close(refused[0])
                return
            self.open += 1
            self.metrics.online_sessions.inc()
            try:
                await self.serve(ws)
            finally:
                self.open -= 1
                self.metrics.online_sessions.dec()
        except WebSocketDisconnect:
            pass

    async def serve(self, ws):
        loop, idle = asyncio.get_running_loop(), self.settings.ws_idle_timeout
        session = await loop.run_in_executor(self.model_thread, OnlineSession, self.service,
                                             self.settings.online_window)
        await ws.send_json({'ready': True, 'window': session.window,
                            **self.service.describe()['online']})
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), idle)
            except asyncio.TimeoutError:
                await ws.close(1000, f"no frame for {idle:g} s")
                return
            if message['type'] == 'websocket.disconnect':
                return
            if message.get('bytes') is not None:
                await ws.send_json(await self.answer(session, message['bytes']))
            elif is_reset(message.get('text')):
                await loop.run_in_executor(self.model_thread, session.reset)
                await ws.send_json({'reset': True})
            else:
                await ws.close(1003, 'send frames as binary JPEG/PNG messages, or {"reset": true}')
                return

    async def answer(self, session, data):
        loop, t0 = asyncio.get_running_loop(), time.perf_counter()
        try:
            x = await loop.run_in_executor(self.frame_threads, bytes_input, data,
                                           self.service.cfg, self.settings.max_frame_pixels)
        except FrameError as e:
            return {'error': str(e)}
        answer = await loop.run_in_executor(self.model_thread, session.step, x, 5, t0)
        self.metrics.online_frames.inc()
        return answer
