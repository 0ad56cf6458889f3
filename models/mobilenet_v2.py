"""MobileNetV2 (width 1.0) whose residual blocks can take a temporal shift: the backbone
of the TSM paper's online results.

The layout is MIT temporal-shift-module's `archs/mobilenet_v2.py` (after tonylins'
pytorch-mobilenet-v2): a 3x3/2 stem of 32 channels, 17 inverted-residual blocks in 7
stages (expansion t, channels c, blocks n, first stride s), a 1x1 conv to 1280 channels,
ReLU6 after every conv but each block's last (linear) one.  MIT's TSN inserts the shift
in every block with an expansion conv and a residual connection (`len(m.conv) == 8 and
m.use_res_connect`), on the input of that first 1x1 conv; the shortcut keeps the unshifted input (its "blockres").  Those are 10
of the 17 blocks (`shiftable_blocks`); the online demo's `shift_block_idx` lists the same.
"""
import math

import paddle
import paddle.nn as nn

from .resnet import ConvBN
from .temporal_shift import ShiftBackbone, block_inputs, check_shift_options

# (expansion t, output channels c, blocks n, stride of the first s), MIT's table
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
SHIFT_PLACES = ('blockres', 'block')


def block_specs():
    """[(in_channels, out_channels, stride, expansion)] of the 17 blocks, in order."""
    specs, in_ch = [], STEM_CHANNELS
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            specs.append((in_ch, c, s if i == 0 else 1, t))
            in_ch = c
    return specs


def shiftable_blocks():
    """Indices of the blocks MIT shifts: an expansion conv and a residual connection
    (`len(m.conv) == 8 and m.use_res_connect`)."""
    return [i for i, (a, b, s, t) in enumerate(block_specs()) if t != 1 and s == 1 and a == b]


def _conv_bn(in_ch, out_ch, kernel, stride=1, act='relu6', groups=1):
    """ConvBN with MIT's init: conv weights N(0, sqrt(2 / (k*k*out))) (BN 1 and 0)."""
    std = math.sqrt(2.0 / (kernel * kernel * out_ch))
    init = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std))
    return ConvBN(in_ch, out_ch, kernel, stride, act=act, groups=groups, weight_attr=init)


class InvertedResidual(nn.Layer):
    """[1x1 expand (t > 1)] -> 3x3 depthwise (stride) -> 1x1 project, ReLU6 after the
    first two; x + that when the shape stays (use_res_connect)."""

    def __init__(self, in_ch, out_ch, stride, expand_ratio):
        super().__init__()
        hidden = int(in_ch * expand_ratio)
        self.use_res_connect = stride == 1 and in_ch == out_ch
        self.shift = None  # a TemporalShift or None; MobileNetV2TSM.set_shift places them
        self.expand = _conv_bn(in_ch, hidden, 1) if expand_ratio != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, out_ch, 1, act=False)

    def forward(self, x, shift_place='blockres'):
        short, x = block_inputs(self.shift, x, shift_place)
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return short + h if self.use_res_connect else h


class MobileNetV2TSM(ShiftBackbone):
    """[N*T, C_in, H, W] -> [N*T, 1280, H/32, W/32] feature maps."""

    def __init__(self, in_channels=3, seg_num=8, shift_ratio=0.125, shift_direction='paddle',
                 shift_place='blockres', shift_every=1):
        super().__init__()
        self.seg_num = seg_num
        self.stem = _conv_bn(in_channels, STEM_CHANNELS, 3, 2)
        specs = block_specs()
        self.blocks = nn.LayerList([InvertedResidual(*spec) for spec in specs])
        self.last = _conv_bn(specs[-1][1], LAST_CHANNELS, 1)
        self.out_channels = LAST_CHANNELS
        self.set_shift(shift_ratio, shift_direction, shift_place, shift_every)

    def set_shift(self, shift_ratio, shift_direction, shift_place, shift_every=1):
        """(Re)place the temporal shifts in place, in every block of `shiftable_blocks()`; ratio 0:
        no shift (TSN).  shift_every is ResNet's (every 2nd block of deep ResNets): MIT's
        MobileNetV2 shifts each such block, so only 1 is accepted."""
        check_shift_options(shift_ratio, shift_direction, shift_place, shift_every,
                            SHIFT_PLACES)
        if shift_every != 1:
            raise ValueError(f"shift_every must be 1 for MobileNetV2 (every residual block "
                             f"shifts), got {shift_every}")
        self.shift_ratio, self.shift_direction = shift_ratio, shift_direction
        self.shift_place, self.shift_every = shift_place, 1
        shiftable = set(shiftable_blocks()) if shift_ratio > 0 else set()
        for i, block in enumerate(self.blocks):
            block.shift = self.new_shift() if i in shiftable else None

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, self.shift_place)
        return self.last(x)
