"""Online TSM: classify a stream frame by frame, each frame through the 2D network once.

Every shifted block keeps a cache: the first fold of channels (shift_ratio of them) of
its input at the previous frame.  At frame t that fold is replaced by the cache, the
other channels stay, and the current fold becomes the cache for t+1.  Nothing comes
from the future, so the cost per frame is one 2D CNN frame and the features of frame t
are exactly those of the offline TSM with `shift_direction: backward` (the first fold
from t-1, zero at t=0, the rest unshifted) run on frames 0..t.

The score at frame t is the model's head over the frames of a window: the last
`window` frames (window=0: every frame seen so far, which makes it equal to the offline
backward model run on frames 0..t).  For weights trained with the bi-directional
"paddle" shift, the fold that looked forwards is simply left in place.

    online = OnlineTSM(model, window=8)   # takes over `model` (installs the caches)
    for frame in frames:                   # float32 [N, 3, H, W], normalised
        logits = online.step(frame)        # [N, num_classes]
    online.reset()                         # before another stream
"""
import collections

import paddle
import paddle.nn as nn

from .temporal_shift import find_shifts, fold_sizes


class OnlineShift(nn.Layer):
    """The backward-only shift of one block, one frame at a time."""

    def __init__(self, shift_ratio):
        super().__init__()
        self.shift_ratio = shift_ratio
        self.cache = None

    def forward(self, x):  # [N, C, H, W], one frame of each of N streams
        c1 = fold_sizes(x.shape[1], self.shift_ratio)[0]
        previous = self.cache if self.cache is not None else paddle.zeros_like(x[:, :c1])
        self.cache = x[:, :c1]
        return paddle.concat([previous, x[:, c1:]], axis=1)

    def extra_repr(self):
        return f"shift_ratio={self.shift_ratio}, online backward"


class OnlineTSM:
    """A TSM model run per frame with per-block caches (see the module docstring)."""

    def __init__(self, model, window=0):
        backbone = model.backbone
        if backbone.shift_direction == 'mit':
            raise ValueError("online mode needs weights whose first channel fold looks at "
                             "the previous frame (shift_direction 'paddle' or 'backward'); "
                             "these use MIT's direction, whose past fold is the second one")
        if model.seglen != 1:
            raise ValueError(f"online mode runs one frame at a time: MODEL.seglen must be 1, "
                             f"got {model.seglen}")
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        model.eval()
        self.model, self.window = model, int(window)
        self.shifts = []  # in the order the network runs them (any backbone)
        for parent, name, shift in find_shifts(backbone):
            setattr(parent, name, OnlineShift(shift.shift_ratio))
            self.shifts.append(getattr(parent, name))
        self.reset()

    def reset(self):
        for shift in self.shifts:
            shift.cache = None
        self.recent = collections.deque(maxlen=self.window or None)
        self.total, self.count = None, 0

    @paddle.no_grad()
    def step(self, frame):
        """frame float32 [N, 3, H, W] -> logits [N, num_classes] over the window."""
        m = self.model
        x = m.avgpool(m.backbone(frame)).flatten(1)  # [N, F, 1, 1] -> [N, F]
        x = m.dropout(x)
        if m.head == 'logit_mean':
            x = m.fc(x)  # averaged after the FC, as the offline head does
        self.count += 1
        if self.window:
            self.recent.append(x)
            mean = paddle.stack(list(self.recent), axis=1).mean(axis=1)
        else:
            self.total = x if self.total is None else self.total + x
            mean = self.total / self.count
        return mean if m.head == 'logit_mean' else m.fc(mean)
