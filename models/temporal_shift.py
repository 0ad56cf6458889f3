"""The temporal shift: zero FLOPs, zero parameters.

Paddle's fused op `paddle.nn.functional.temporal_shift` fills channels [0, r*C) of
frame t from frame t-1 and channels [r*C, 2r*C) from frame t+1 ("paddle"
direction).  MIT's and mmaction2's PyTorch code do the opposite ("mit"): the first
fold from t+1, the second from t-1.  Weights trained under one convention are
silently wrong under the other, so the direction is an option.  "backward" is the
uni-directional shift of online TSM: the first fold from t-1 (as "paddle"), the other
channels stay, nothing comes from the future (models/online.py runs it frame by frame).

Formulations (the same numbers, bit for bit; tests/test_temporal_shift.py):
  fused  Paddle's op (the "paddle" direction only; the others always use `slice`).
  slice  split the channel folds, move each fold one frame (`shift_frames`), concat.
         Pure data movement in ops that oneDNN runs in its own layout; with `batch`
         (clips per call, known when exporting) the frames move by static slices along
         the batch axis, with no 5-D reshape.
models/shift_conv.py folds the shift into the convolution that follows it (export).

Backbones (models/resnet.py, models/mobilenet_v2.py) hold their shifts as `TemporalShift`
sublayers; `find_shifts` finds them by type, in the order the network runs them.
"""
import paddle
import paddle.nn.functional as F

DIRECTIONS = ('paddle', 'mit', 'backward')
FORMULATIONS = ('fused', 'slice')


def fold_sizes(channels, shift_ratio):
    """Channel boundaries as the Paddle op computes them: c1 = int(C*r), c2 = int(2*C*r)."""
    return int(channels * shift_ratio), int(channels * 2 * shift_ratio)


def fold_steps(direction):
    """[(fold, step)] of each shifted fold: fold 0 is channels [0, c1), fold 1 [c1, c2);
    step +1 means frame t takes frame t-1 (the past), -1 frame t+1."""
    if direction == 'paddle':
        return [(0, +1), (1, -1)]
    if direction == 'mit':
        return [(0, -1), (1, +1)]
    if direction == 'backward':
        return [(0, +1)]
    raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")


def fold_bounds(channels, shift_ratio, direction):
    """[(start, stop, step)] of the shifted folds that hold channels, and the first
    unshifted channel."""
    c1, c2 = fold_sizes(channels, shift_ratio)
    edges = [(0, c1), (c1, c2)]
    steps = fold_steps(direction)
    rest = edges[steps[-1][0]][1]
    return [(*edges[i], step) for i, step in steps if edges[i][1] > edges[i][0]], rest


def shift_frames(x, seg_num, step, batch=None, channels=None):
    """x [N*T, c, H, W] -> frame t of each clip takes frame t-step (step +1 or -1) of the
    same clip; the frame with no source is zero.  channels=(start, stop): of those
    channels only (one slice picks frames and channels).  batch=None: N from the tensor
    (a 5-D view); batch=N: static slices along the frame axis."""
    if channels is not None and batch is None:
        x, channels = x[:, channels[0]:channels[1]], None
    start, stop = channels or (0, x.shape[1])
    nt, c, h, w = x.shape
    c = stop - start
    if seg_num == 1:
        return paddle.zeros_like(x[:, start:stop])
    if batch is None:
        v = x.reshape([-1, seg_num, c, h, w])  # [N*T, c, H, W] -> [N, T, c, H, W]
        zero = paddle.zeros_like(v[:, :1])
        v = paddle.concat([zero, v[:, :-1]] if step > 0 else [v[:, 1:], zero], axis=1)
        return v.reshape([-1, c, h, w])  # [N, T, c, H, W] -> [N*T, c, H, W]
    # static sizes when exporting for a fixed input: the zero frame is a constant
    zero = (paddle.zeros([1, c, h, w], x.dtype) if min(h, w) > 0
            else paddle.zeros_like(x[:1, start:stop]))
    pieces = []
    for n in range(batch):  # frames n*T .. n*T+T-1 are clip n
        first = n * seg_num
        pieces += ([zero, x[first:first + seg_num - 1, start:stop]] if step > 0
                   else [x[first + 1:first + seg_num, start:stop], zero])
    return paddle.concat(pieces, axis=0)


def temporal_shift(x, seg_num, shift_ratio=0.125, direction='paddle', formulation='fused',
                   batch=None):
    """x: [N*T, C, H, W] -> same shape, channel folds shifted one step along T."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"shift formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if shift_ratio == 0:
        return x
    if direction == 'paddle' and formulation == 'fused':
        return F.temporal_shift(x, seg_num=seg_num, shift_ratio=shift_ratio)
    folds, rest = fold_bounds(x.shape[1], shift_ratio, direction)
    if not folds:
        return x
    sizes = [stop - start for start, stop, _ in folds]
    if rest < x.shape[1]:
        sizes.append(x.shape[1] - rest)
    parts = paddle.split(x, sizes, axis=1) if len(sizes) > 1 else [x]
    moved = [shift_frames(p, seg_num, step, batch) for p, (_, _, step) in zip(parts, folds)]
    return paddle.concat(moved + parts[len(folds):], axis=1) if len(parts) > 1 else moved[0]


class TemporalShift(paddle.nn.Layer):
    """Layer wrapper so the shift shows up in model summaries."""

    def __init__(self, seg_num, shift_ratio=0.125, direction='paddle', formulation='fused',
                 batch=None):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"shift formulation must be one of {FORMULATIONS}, "
                             f"got {formulation!r}")
        self.seg_num, self.shift_ratio, self.direction = seg_num, shift_ratio, direction
        self.formulation, self.batch = formulation, batch

    def forward(self, x):
        return temporal_shift(x, self.seg_num, self.shift_ratio, self.direction,
                              self.formulation, self.batch)

    def extra_repr(self):
        return (f"seg_num={self.seg_num}, shift_ratio={self.shift_ratio}, "
                f"direction={self.direction}, formulation={self.formulation}")


def find_shifts(layer, kind=TemporalShift):
    """[(parent, attribute, shift)] of every sublayer of type `kind` under `layer`, in
    registration order, which is the order the backbones run their blocks.  How
    models/online.py swaps the shifts for per-frame StepShifts on any backbone."""
    found = []
    for _, parent in layer.named_sublayers(include_self=True):
        found += [(parent, name, child) for name, child in parent.named_children()
                  if isinstance(child, kind)]
    return found


def block_inputs(shift, x, shift_place):
    """The inputs of a residual block's shortcut and branch: 'blockres' shifts only the
    branch's (the model zoo, MIT "blockres"), 'block' both; shift None: no shift."""
    if shift is None:
        return x, x
    moved = shift(x)
    return (moved if shift_place == 'block' else x), moved


def check_shift_options(shift_ratio, shift_direction, shift_place, shift_every, places):
    """Raise ValueError naming the first option a backbone cannot take."""
    if shift_place not in places:
        raise ValueError(f"shift_place must be one of {places}, got {shift_place!r}")
    if shift_direction not in DIRECTIONS:
        raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {shift_direction!r}")
    if not 0 <= shift_ratio <= 0.5:
        raise ValueError(f"shift_ratio must be in [0, 0.5], got {shift_ratio}")
    if int(shift_every) != shift_every or shift_every < 1:
        raise ValueError(f"shift_every must be a positive integer, got {shift_every}")


class ShiftBackbone(paddle.nn.Layer):
    """What every shifted backbone shares: its shift settings (set_shift, defined by each
    backbone) and how the shifts compute (set_formulation)."""
    shift_formulation, shift_batch = 'fused', None

    def new_shift(self):
        """A TemporalShift with the backbone's current settings."""
        return TemporalShift(self.seg_num, self.shift_ratio, self.shift_direction,
                             self.shift_formulation, self.shift_batch)

    def set_formulation(self, formulation, batch=None):
        """How the shifts are computed, not what (models/temporal_shift.py): 'fused' or
        'slice'; `batch`: clips per call when it is fixed (exported models)."""
        if formulation not in FORMULATIONS:
            raise ValueError(f"shift formulation must be one of {FORMULATIONS}, "
                             f"got {formulation!r}")
        self.shift_formulation, self.shift_batch = formulation, batch
        for _, _, shift in find_shifts(self):
            shift.formulation, shift.batch = formulation, batch
