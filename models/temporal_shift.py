"""The temporal shift: zero FLOPs, zero parameters.

Paddle's fused op `paddle.nn.functional.temporal_shift` fills channels [0, r*C) of
frame t from frame t-1 and channels [r*C, 2r*C) from frame t+1 ("paddle"
direction).  MIT's and mmaction2's PyTorch code do the opposite ("mit"): the first
fold from t+1, the second from t-1.  Weights trained under one convention are
silently wrong under the other, so the direction is an option.  "backward" is the
uni-directional shift of online TSM: the first fold from t-1 (as "paddle"), the other
channels stay, nothing comes from the future (models/online.py runs it frame by frame).
"""
import paddle
import paddle.nn.functional as F

DIRECTIONS = ('paddle', 'mit', 'backward')


def fold_sizes(channels, shift_ratio):
    """Channel boundaries as the Paddle op computes them: c1 = int(C*r), c2 = int(2*C*r)."""
    return int(channels * shift_ratio), int(channels * 2 * shift_ratio)


def temporal_shift(x, seg_num, shift_ratio=0.125, direction='paddle'):
    """x: [N*T, C, H, W] -> same shape, channel folds shifted one step along T."""
    if shift_ratio == 0:
        return x
    if direction == 'paddle':
        return F.temporal_shift(x, seg_num=seg_num, shift_ratio=shift_ratio)
    if direction == 'backward':
        nt, c, h, w = x.shape
        c1 = fold_sizes(c, shift_ratio)[0]
        x = x.reshape([-1, seg_num, c, h, w])  # [N*T, C, H, W] -> [N, T, C, H, W]
        past = paddle.concat([paddle.zeros_like(x[:, :1, :c1]), x[:, :-1, :c1]], axis=1)
        return paddle.concat([past, x[:, :, c1:]], axis=2).reshape([-1, c, h, w])
    if direction != 'mit':
        raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")
    nt, c, h, w = x.shape
    c1, c2 = fold_sizes(c, shift_ratio)
    x = x.reshape([-1, seg_num, c, h, w])  # [N*T, C, H, W] -> [N, T, C, H, W]
    zeros = paddle.zeros_like(x[:, :1])
    # first fold from t+1, second fold from t-1, zero-filled at the ends
    from_next = paddle.concat([x[:, 1:, :c1], zeros[:, :, :c1]], axis=1)
    from_prev = paddle.concat([zeros[:, :, c1:c2], x[:, :-1, c1:c2]], axis=1)
    out = paddle.concat([from_next, from_prev, x[:, :, c2:]], axis=2)
    return out.reshape([-1, c, h, w])  # [N, T, C, H, W] -> [N*T, C, H, W]


class TemporalShift(paddle.nn.Layer):
    """Layer wrapper so the shift shows up in model summaries."""

    def __init__(self, seg_num, shift_ratio=0.125, direction='paddle'):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")
        self.seg_num, self.shift_ratio, self.direction = seg_num, shift_ratio, direction

    def forward(self, x):
        return temporal_shift(x, self.seg_num, self.shift_ratio, self.direction)

    def extra_repr(self):
        return f"seg_num={self.seg_num}, shift_ratio={self.shift_ratio}, direction={self.direction}"
