"""What every engine shares: the precision this CPU runs, and the Runner base class
(batching in chunks, the eager model's call signature, describe())."""
import logging

import numpy as np

from engines import PRECISIONS, EngineError

logger = logging.getLogger(__name__)


def cpu_has_bf16():
    """AVX512-BF16 or AMX: where oneDNN (Paddle, OpenVINO) runs bfloat16 natively."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def default_precision():
    """predict.py's and the server's default: bf16 where the CPU runs it natively (OpenVINO's
    own default there; its top-1 agreement with fp32: docs/engines.md), else fp32."""
    return 'bf16' if cpu_has_bf16() else 'fp32'


def effective_precision(precision):
    """bf16 where the CPU runs it natively, else fp32 (with a warning); others as given."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == 'bf16' and not cpu_has_bf16():
        logger.warning("this CPU has no native bfloat16 (AVX512-BF16/AMX): running float32")
        return 'fp32'
    return precision


class Runner:
    """A loaded artifact: run(float32 [B, T, 3L, S, S]) -> numpy [B, K] for any B, and the
    eager model's call signature (tensor in, paddle tensor out) for evaluate()/predict().
    Subclasses set self.batch (clips per engine call; None: any) and self.info, and define
    _infer(chunk).  One call at a time: a runner holds one engine request."""

    batch = None
    info = None

    def _infer(self, x):
        raise NotImplementedError

    def run(self, x):
        """float32 numpy [B, ...] -> numpy outputs [B, K].  An artifact of a fixed batch is
        fed in chunks of that size (the last one zero-padded)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.batch or len(x)
        outs = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if n < step:
                chunk = np.concatenate([chunk, np.zeros((step - n, *x.shape[1:]), np.float32)])
            outs.append(np.array(self._infer(chunk)[:n], dtype=np.float32))
        return np.concatenate(outs)

    def describe(self):
        """{'engine', 'version', 'precision', 'artifact', 'threads', 'batch', ...}: for logs
        and the server's /v1/model."""
        return dict(self.info)

    def __call__(self, imgs):
        import paddle
        x = imgs.numpy() if isinstance(imgs, paddle.Tensor) else np.asarray(imgs)
        return paddle.to_tensor(self.run(x))

    def eval(self):  # the loops call model.eval()
        return self

    def train(self, mode=True):
        raise RuntimeError("an exported inference model cannot be trained")
