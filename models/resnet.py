"""A table-driven ResNet whose residual branches can take a temporal shift.

Layers carry the fluid names of the model zoo (`res2a_branch2a`, `bn2a_branch2a`,
...) so that released weights map onto them by rule (see `fluid_names`).
"""
import paddle.nn as nn

from .temporal_shift import ShiftBackbone, block_inputs, check_shift_options

# depth -> (block type, blocks per stage)
NET_CONFIG = {
    18: ('basic', [2, 2, 2, 2]),
    34: ('basic', [3, 4, 6, 3]),
    50: ('bottleneck', [3, 4, 6, 3]),
    101: ('bottleneck', [3, 4, 23, 3]),
    152: ('bottleneck', [3, 8, 36, 3]),
}
STAGE_WIDTHS = [64, 128, 256, 512]
SHIFT_PLACES = ('blockres', 'block')


class ConvBN(nn.Layer):
    """conv (no bias) -> BN -> optional ReLU (act=True; 'relu6': ReLU6, MobileNetV2's),
    named like the model zoo's conv_bn_layer; groups=in_ch: a depthwise conv."""

    def __init__(self, in_ch, out_ch, kernel, stride=1, act=True, name='', groups=1,
                 weight_attr=None):
        super().__init__()
        self.fluid_name = name
        self.conv = nn.Conv2D(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2,
                              groups=groups, weight_attr=weight_attr, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_ch, momentum=0.9, epsilon=1e-5)
        self.act = (nn.ReLU6() if act == 'relu6' else nn.ReLU()) if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class _Block(nn.Layer):
    """Shared shortcut + shift logic; subclasses build `self.branch` (a Sequential)."""
    expansion = 1

    def __init__(self, in_ch, width, stride, name, shift=None):
        super().__init__()
        out_ch = width * self.expansion
        self.shift = shift  # a TemporalShift or None; ResNetTSM.set_shift places them
        self.shortcut = (ConvBN(in_ch, out_ch, 1, stride, act=False, name=name + '_branch1')
                         if in_ch != out_ch or stride != 1 else None)
        self.relu = nn.ReLU()

    def forward(self, x, shift_place='blockres'):
        short, x = block_inputs(self.shift, x, shift_place)
        short = short if self.shortcut is None else self.shortcut(short)
        return self.relu(short + self.branch(x))


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, in_ch, width, stride, name, shift=None):
        super().__init__(in_ch, width, stride, name, shift)
        self.branch = nn.Sequential(
            ConvBN(in_ch, width, 3, stride, name=name + '_branch2a'),
            ConvBN(width, width, 3, act=False, name=name + '_branch2b'))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, in_ch, width, stride, name, shift=None):
        super().__init__(in_ch, width, stride, name, shift)
        self.branch = nn.Sequential(
            ConvBN(in_ch, width, 1, name=name + '_branch2a'),
            ConvBN(width, width, 3, stride, name=name + '_branch2b'),  # stride on the 3x3
            ConvBN(width, width * 4, 1, act=False, name=name + '_branch2c'))


def block_name(stage, index, depth):
    """Model-zoo naming: res2a, res2b, ...; ResNet-101/152 stage 4 uses res4a, res4b1, ..."""
    if depth in (101, 152) and stage == 2:
        return f"res{stage + 2}" + ('a' if index == 0 else f"b{index}")
    return f"res{stage + 2}{chr(97 + index)}"


class ResNetTSM(ShiftBackbone):
    """[N*T, C_in, H, W] -> [N*T, 512*expansion, H/32, W/32] feature maps."""

    def __init__(self, depth=50, in_channels=3, seg_num=8, shift_ratio=0.125,
                 shift_direction='paddle', shift_place='blockres', shift_every=1):
        super().__init__()
        if depth not in NET_CONFIG:
            raise ValueError(f"num_layers must be one of {sorted(NET_CONFIG)}, got {depth}")
        kind, counts = NET_CONFIG[depth]
        block_cls = Bottleneck if kind == 'bottleneck' else BasicBlock
        self.seg_num = seg_num
        self.stem = ConvBN(in_channels, 64, 7, stride=2, name='conv1')
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        blocks, in_ch = [], 64
        for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, counts)):
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                block = block_cls(in_ch, width, stride, block_name(stage, i, depth))
                block.index_in_stage = i
                blocks.append(block)
                in_ch = width * block_cls.expansion
        self.blocks = nn.LayerList(blocks)
        self.out_channels = in_ch
        self.set_shift(shift_ratio, shift_direction, shift_place, shift_every)

    def set_shift(self, shift_ratio, shift_direction, shift_place, shift_every=1):
        """(Re)place the temporal shifts in place: a shift of `shift_ratio` of the channels
        each way in block i of every stage where i % shift_every == 0 (MIT and mmaction2
        shift every 2nd block of ResNet-101/152, their `n_round`); ratio 0: no shift (TSN).
        The shifts hold no parameters, so the state_dict does not change."""
        check_shift_options(shift_ratio, shift_direction, shift_place, shift_every,
                            SHIFT_PLACES)
        self.shift_ratio, self.shift_direction = shift_ratio, shift_direction
        self.shift_place, self.shift_every = shift_place, int(shift_every)
        for block in self.blocks:
            shifted = shift_ratio > 0 and block.index_in_stage % self.shift_every == 0
            block.shift = self.new_shift() if shifted else None

    def forward(self, x):
        x = self.pool(self.stem(x))
        for block in self.blocks:
            x = block(x, self.shift_place)
        return x


def fluid_names(layer, prefix=''):
    """{state_dict key: model-zoo parameter name} for every ConvBN inside `layer`."""
    names = {}
    for path, sub in layer.named_sublayers(prefix=prefix):
        if isinstance(sub, ConvBN):
            n = sub.fluid_name
            bn = 'bn_' + n if n == 'conv1' else 'bn' + n[3:]
            names[f"{path}.conv.weight"] = n + '_weights'
            for ours, theirs in (('weight', 'scale'), ('bias', 'offset'),
                                 ('_mean', 'mean'), ('_variance', 'variance')):
                names[f"{path}.bn.{ours}"] = f"{bn}_{theirs}"
    return names
