"""Online TSM: classify a stream frame by frame, each frame through the 2D network once.

Every shifted layer (a TemporalShift anywhere in the model, found by type, so any backbone
that uses models/temporal_shift.py works) keeps a state: the first fold of channels
(shift_ratio of them) of its input at the previous frame.  At frame t that fold is
replaced by the state, the other channels stay, and the current fold becomes the state
for t+1.  Nothing comes from the future, so the cost per frame is one 2D CNN frame and
the features of frame t are exactly those of the offline TSM with
`shift_direction: backward` (the first fold from t-1, zero at t=0, the rest unshifted)
run on frames 0..t.

The per-frame model is a function of its inputs only (OnlineStep), so it exports
(paddle.jit.save, then any engine):

    inputs   frame [B, 3, S, S], state_0 ... state_{n-1} (one per shifted layer; zeros
             at the first frame)
    outputs  logits [B, K] of this frame, then the new states, same order and shapes

The score at frame t is the mean of the per-frame logits over a window: the last
`window` frames (window=0: every frame seen so far, which makes it equal to the offline
backward model run on frames 0..t).  That mean stays outside the per-frame model
(OnlineStream): the head is affine, so the mean of the per-frame logits is the head over
the mean of the features, which is what the offline head computes.  For weights trained
with the bi-directional "paddle" shift, the fold that looked forwards is simply left in
place.

    online = OnlineTSM(model, window=8)   # takes over `model` (installs the states)
    for frame in frames:                   # float32 [N, 3, H, W], normalised
        logits = online.step(frame)        # numpy [N, num_classes]
    online.reset()                         # before another stream
"""
import collections

import numpy as np
import paddle
import paddle.nn as nn

from .resnet import ResNetTSM
from .shift_conv import PartsBackbone, fold_into_first_conv
from .temporal_shift import find_shifts, fold_sizes


def state_names(count):
    """The exported inputs after the frame, and the outputs after the logits."""
    return [f'state_{i}' for i in range(count)], [f'new_state_{i}' for i in range(count)]


def output_names(count):
    return ['logits'] + state_names(count)[1]


class StateSlots:
    """Where the shift layers of one OnlineStep read their states and leave the new ones
    during a forward call (a plain object: nothing in it is a parameter or a buffer)."""

    def __init__(self):
        self.given, self.new = None, {}

    def swap(self, index, fold):
        """State `index` given to this call (zeros without states), and `fold` kept as
        its new value."""
        previous = self.given[index] if self.given is not None else paddle.zeros_like(fold)
        self.new[index] = fold
        return previous


class StepShift(nn.Layer):
    """The backward-only shift of one layer at one frame: the first fold comes from the
    state, the current first fold is the new state."""

    def __init__(self, shift_ratio, index, slots):
        super().__init__()
        self.shift_ratio, self.index, self.slots = shift_ratio, index, slots

    def forward(self, x):  # [N, C, H, W], one frame of each of N streams
        c1 = fold_sizes(x.shape[1], self.shift_ratio)[0]
        previous = self.slots.swap(self.index, x[:, :c1])
        return paddle.concat([previous, x[:, c1:]], axis=1)

    def extra_repr(self):
        return f"shift_ratio={self.shift_ratio}, state {self.index}, online backward"


def check_online(model):
    """ValueError (one line) when `model` cannot run online."""
    if any(s.direction == 'mit' for _, _, s in find_shifts(model)):
        raise ValueError("online mode needs weights whose first channel fold looks at the "
                         "previous frame (shift_direction 'paddle' or 'backward'); these use "
                         "MIT's direction, whose past fold is the second one")
    if getattr(model, 'seglen', 1) != 1:
        raise ValueError(f"online mode runs one frame at a time: MODEL.seglen must be 1, "
                         f"got {model.seglen}")


class OnlineStep(nn.Layer):
    """(frame [B, 3, S, S], [state_i]) -> [logits [B, K], new state_i ...]: `model` (a
    TSM; taken over: its TemporalShift layers become StepShift) on one frame.  states
    None: zeros (the first frame).

    formulation (the export; models/shift_conv.py, BN folded): 'split' runs a ResNet
    backbone on two channel parts, the backward fold and the rest, so that a state is a
    part as it is; 'conv' folds each blockres shift into the convolution after it (its
    fold's weights on the state).  Neither slices and concatenates the block input, which
    costs the engines layout conversions.  Other backbones or places: StepShift."""

    def __init__(self, model, formulation='slice'):
        super().__init__()
        check_online(model)
        model.eval()
        self.slots = StateSlots()
        shifts = find_shifts(model)  # in the order the network runs them (any backbone)
        backbone = model.backbone
        if formulation == 'split' and isinstance(backbone, ResNetTSM):
            model.backbone = PartsBackbone(backbone, slots=self.slots)
            model.eval()
        elif formulation in ('split', 'conv') and backbone.shift_place == 'blockres':
            shifted = [block for block in backbone.blocks if block.shift is not None]
            for index, block in enumerate(shifted):
                fold_into_first_conv(block, None, 'backward', (self.slots, index))
            model.eval()
        else:
            for index, (parent, name, shift) in enumerate(shifts):
                setattr(parent, name, StepShift(shift.shift_ratio, index, self.slots))
        self.model, self.num_states = model, len(shifts)

    def forward(self, frame, states=None):
        self.slots.given, self.slots.new = states, {}
        logits = self.model(frame.unsqueeze(1))  # [B, 3, S, S] -> [B, 1, 3, S, S]: T = 1
        new = [self.slots.new[i] for i in range(self.num_states)]
        self.slots.given, self.slots.new = None, {}
        return [logits] + new

    @paddle.no_grad()
    def state_shapes(self, size):
        """[C_i, H_i, W_i] of every state for frames of size x size."""
        out = self(paddle.zeros([1, 3, size, size]))
        return [list(s.shape[1:]) for s in out[1:]]

    def input_spec(self, size, batch=None):
        """jit.save's input_spec: frame, then the states; batch None: dynamic."""
        names = state_names(self.num_states)[0]
        spec = paddle.static.InputSpec
        return [spec([batch, 3, size, size], 'float32', 'frame'),
                [spec([batch, *shape], 'float32', name)
                 for name, shape in zip(names, self.state_shapes(size))]]


class LogitWindow:
    """The mean of the per-frame logits over the last `window` frames (0: all so far)."""

    def __init__(self, window=0):
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.window = int(window)
        self.recent = collections.deque(maxlen=self.window or None)
        self.total, self.count = None, 0

    def add(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        self.count += 1
        if self.window:
            self.recent.append(logits)
            return sum(self.recent) / len(self.recent)
        self.total = logits if self.total is None else self.total + logits
        return self.total / self.count


class OnlineStream:
    """A per-frame model with its states between calls and the window's mean:
    `step_fn(frame, states) -> (logits, new states)`, numpy in and out (the eager
    OnlineStep, or an exported one in an engine).  Each stream owns its states."""

    def __init__(self, step_fn, state_shapes, window=0, batch=None):
        self.step_fn, self.state_shapes, self.batch = step_fn, state_shapes, batch
        self.window = LogitWindow(window).window  # checked
        self.reset()

    def reset(self):
        self.states = None
        self.averager = LogitWindow(self.window)

    def step(self, frame):
        """frame float32 [N, 3, S, S] -> numpy logits [N, K] averaged over the window."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if self.states is None:
            self.states = [np.zeros((len(frame), *s), np.float32) for s in self.state_shapes]
        logits, self.states = self.step_fn(frame, self.states)
        return self.averager.add(logits)


class OnlineTSM(OnlineStream):
    """The eager model run per frame (see the module docstring); takes over `model`."""

    def __init__(self, model, window=0):
        self.net, self.model = OnlineStep(model), model
        super().__init__(self._eager_step, None, window)  # shapes: from the first frame

    @paddle.no_grad()
    def _eager_step(self, frame, states):
        out = self.net(paddle.to_tensor(frame), [paddle.to_tensor(s) for s in states])
        return out[0].numpy(), [s.numpy() for s in out[1:]]

    def step(self, frame):
        if isinstance(frame, paddle.Tensor):
            frame = frame.numpy()
        if self.states is None:
            self.state_shapes = self.net.state_shapes(frame.shape[-1])
        return super().step(frame)
