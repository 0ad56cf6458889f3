"""Export formulations of a TSM: the same function, arranged for Paddle Inference + oneDNN.

    net = inference_copy(model, 'split', batch=1)   # a copy; `model` is left as it is

oneDNN keeps activations channels-last (NHWC) for its convolutions, while Paddle's
slice and concat kernels write plain NCHW: every tensor that goes through them is
converted out and back.  The formulations differ in how much goes through them (what
each costs against the network without shifts: docs/shift.md).

  fused  the shifts as Paddle's fused op (what the eager model runs).  oneDNN has no
         kernel for it: every shift converts all activations.
  slice  the shifts as split + frame moves + concat (models/temporal_shift.py), bit for
         bit the fused op.  The whole block input is copied and converted.
  conv   each shift folded into the convolution after it.  A convolution acts on every
         frame alone and is linear in its input channels, so

             conv(shift(x)) = conv(x, W with the shifted folds' input channels zeroed)
                            + conv(concat(shift_frames(x_f) for folds f), W[:, folds])

         Only the folds (1/4 of the channels) move, by whole frames; the price is the
         zeroed quarter of the first convolution's multiply-adds.
  split  every tensor between blocks travels as two channel parts,
         the shifted folds and the rest (channel_parts): each convolution that makes
         one is split by output channels, each that reads one is the sum of one
         convolution per part (oneDNN's fused residual sum).  The folds move by whole
         frames with no channel slice of the block input and no wasted multiply-adds:
         the multiply-adds are exactly those of the unshifted network (what remains
         is the frame moves' conversions and one more residual sum).

conv and split fold BN into the weights, as Paddle Inference does for the unshifted
network; they equal the eager model up to float32 rounding (summation order).

`batch` (clips per call) fixes the batch size of the exported program: the frame moves
are then static slices; None keeps the batch dynamic (a 5-D view per fold, a little
slower).  shift_place 'block' shifts the block input for the shortcut too: 'split'
handles it (the shortcut reads the moved parts); 'conv' falls back to 'split' there (the
shortcut needs the shifted tensor itself, so there is no convolution to fold it into).
'split' is built for the ResNet only: a MobileNetV2 export takes 'conv' instead (its
shifted blocks are blockres; 'slice' for 'block', where 'conv' has nothing to fold into).

Which engine runs which (engines.FORMULATION): split for OpenVINO and ONNX Runtime, conv for
Paddle Inference, each the cheapest there; why, and the measurements (bench/shift_cost.py
--mode engines and --mode floor): docs/shift.md#which-engine-runs-which.
"""
import copy

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .mobilenet_v2 import InvertedResidual
from .resnet import ResNetTSM
from .temporal_shift import fold_bounds, shift_frames

EXPORT_FORMULATIONS = ('fused', 'slice', 'conv', 'split')


def fold_bn(conv_bn):
    """A ConvBN's convolution and inference-mode BN as one (weight, bias), float32 numpy."""
    bn = conv_bn.bn
    f64 = lambda t: t.numpy().astype('float64')  # noqa: E731
    scale = f64(bn.weight) / np.sqrt(f64(bn._variance) + bn._epsilon)
    weight = f64(conv_bn.conv.weight) * scale[:, None, None, None]
    bias = f64(bn.bias) - f64(bn._mean) * scale
    return weight.astype('float32'), bias.astype('float32')


def _param(layer, name, value):
    # set_value copies the array at once; an Assign initializer writes it element by
    # element, far slower (docs/shift.md)
    p = layer.create_parameter(list(value.shape), dtype='float32',
                               default_initializer=nn.initializer.Constant(0.0))
    p.set_value(np.ascontiguousarray(value, dtype='float32'))
    setattr(layer, name, p)  # registers it under `name`
    return p


def moved_folds(x, folds, seg_num, batch):
    """The shifted folds of x ([(start, stop, step)], fold_bounds), each moved one frame,
    side by side: [N*T, C, H, W] -> [N*T, folds' channels, H, W]."""
    moved = [shift_frames(x, seg_num, step, batch, (start, stop)) for start, stop, step in folds]
    return paddle.concat(moved, axis=1) if len(moved) > 1 else moved[0]


class ShiftedConvBN(nn.Layer):
    """act(bn(conv(temporal_shift(x)))) of a shifted ConvBN, without building the shifted
    tensor (see the module docstring).  With `state` (slots, index) it runs one frame
    online (models/online.py): the backward fold comes from the state (slots.swap)."""

    def __init__(self, conv_bn, shift, batch=None, direction=None, state=None):
        super().__init__()
        weight, bias = fold_bn(conv_bn)
        self.folds, rest = fold_bounds(weight.shape[1], shift.shift_ratio,
                                       direction or shift.direction)
        self.state = state
        main = weight.copy()
        main[:, :rest] = 0  # the shifted folds come in through their own convolutions
        _param(self, 'weight_main', main)
        _param(self, 'bias', bias)
        # the folds are contiguous from channel 0: their moved copies, side by side, meet
        # the first `rest` input channels of the weight
        _param(self, 'weight_folds', np.ascontiguousarray(weight[:, :rest]))
        conv = conv_bn.conv
        self.stride, self.padding = conv._stride, conv._padding
        self.act = conv_bn.act  # ReLU (ResNet), ReLU6 (MobileNetV2) or None
        self.seg_num, self.batch = shift.seg_num, batch

    def forward(self, x):  # [N*T, C, H, W] -> [N*T, C_out, H', W']
        y = F.conv2d(x, self.weight_main, self.bias, stride=self.stride, padding=self.padding)
        if self.state is not None:
            slots, index = self.state
            moved = slots.swap(index, x[:, :self.folds[0][1]])
        else:
            moved = moved_folds(x, self.folds, self.seg_num, self.batch)
        y = F.conv2d(moved, self.weight_folds, stride=self.stride, padding=self.padding) + y
        return self.act(y) if self.act is not None else y


def channel_parts(channels, shift_ratio, direction):
    """The split formulation's partition of a C-channel tensor: [(start, stop)], the
    shifted folds side by side, then the unshifted rest."""
    folds, rest = fold_bounds(channels, shift_ratio, direction) if shift_ratio else ([], 0)
    if not folds or rest >= channels:
        return [(0, channels)]
    return [(0, rest), (rest, channels)]


class PartsConv(nn.Layer):
    """A ConvBN (BN folded) whose input and output are lists of channel parts:
    out_k = act(sum_j conv(x_j, W[out_k, in_j]) + b[out_k] + residual_k).  Each sum is a
    chain of convolutions that oneDNN fuses with the add (its residual sum)."""

    def __init__(self, conv_bn, in_parts, out_parts, relu=None):
        super().__init__()
        weight, bias = fold_bn(conv_bn)
        self.relu = conv_bn.act is not None if relu is None else relu
        conv = conv_bn.conv
        self.stride, self.padding = conv._stride, conv._padding
        self.weights, self.biases = [], []
        for k, (o0, o1) in enumerate(out_parts):
            self.biases.append(_param(self, f'b{k}', bias[o0:o1]))
            self.weights.append([_param(self, f'w{k}_{j}',
                                        np.ascontiguousarray(weight[o0:o1, i0:i1]))
                                 for j, (i0, i1) in enumerate(in_parts)])
        # the largest input part first: it carries the bias, the others add onto it
        self.order = sorted(range(len(in_parts)), key=lambda j: in_parts[j][0] - in_parts[j][1])

    def forward(self, xs, residuals=None):
        outs = []
        first, rest = self.order[0], self.order[1:]
        for k, (ws, b) in enumerate(zip(self.weights, self.biases)):
            y = F.conv2d(xs[first], ws[first], b, self.stride, self.padding)
            for j in rest:
                y = F.conv2d(xs[j], ws[j], None, self.stride, self.padding) + y
            if residuals is not None:
                y = y + residuals[k]
            outs.append(F.relu(y) if self.relu else y)
        return outs


class PartsBlock(nn.Layer):
    """A residual block on channel parts (channel_parts): the shifted folds, all in part
    0, move by whole frames (shift_frames); nothing else is copied.  With `state`
    (slots, index) the block runs one frame online (models/online.py): part 0, the
    backward fold, is swapped for the previous frame's (slots.swap)."""

    def __init__(self, block, in_parts, out_parts, shift_place, seg_num, batch,
                 direction=None, state=None):
        super().__init__()
        layers = list(block.branch.children())
        mid = lambda cb: [(0, cb.conv.weight.shape[0])]  # noqa: E731
        self.convs = nn.LayerList()
        parts = in_parts
        for cb in layers[:-1]:
            self.convs.append(PartsConv(cb, parts, mid(cb)))
            parts = mid(cb)
        self.last = PartsConv(layers[-1], parts, out_parts, relu=True)
        self.shortcut = (PartsConv(block.shortcut, in_parts, out_parts, relu=False)
                         if block.shortcut is not None else None)
        self.folds = []
        if block.shift is not None:
            s = block.shift
            self.folds = fold_bounds(in_parts[-1][1], s.shift_ratio,
                                     direction or s.direction)[0]
        self.shift_place, self.seg_num, self.batch = shift_place, seg_num, batch
        self.state = state

    def move(self, fold):
        if self.state is not None:
            slots, index = self.state
            return slots.swap(index, fold)
        return moved_folds(fold, self.folds, self.seg_num, self.batch)

    def forward(self, xs):
        moved = xs
        if self.folds:
            moved = [self.move(xs[0])] + xs[1:]
        short = moved if self.shift_place == 'block' else xs
        if self.shortcut is not None:
            short = self.shortcut(short)
        h = moved
        for conv in self.convs:
            h = conv(h)
        return self.last(h, residuals=short)


class PartsBackbone(nn.Layer):
    """ResNetTSM in the split formulation: [N*T, C, H, W] -> [N*T, F, h, w].  `slots`
    (models/online.py's StateSlots): the per-frame model, whose part 0 is the backward
    fold only, swapped for the state of each shifted block in turn."""

    def __init__(self, backbone, batch=None, slots=None):
        super().__init__()
        r = backbone.shift_ratio
        d = 'backward' if slots is not None else backbone.shift_direction
        stem_out = backbone.stem.conv.weight.shape[0]
        self.stem = PartsConv(backbone.stem, [(0, backbone.stem.conv.weight.shape[1])],
                              [(0, stem_out)])
        self.pool = backbone.pool
        self.parts = channel_parts(stem_out, r, d)
        blocks, in_parts, states = [], self.parts, 0
        for block in backbone.blocks:
            out_parts = channel_parts(block.branch[-1].conv.weight.shape[0], r, d)
            state = None
            if slots is not None and block.shift is not None:
                state, states = (slots, states), states + 1
            blocks.append(PartsBlock(block, in_parts, out_parts, backbone.shift_place,
                                     backbone.seg_num, batch, d, state))
            in_parts = out_parts
        self.blocks = nn.LayerList(blocks)

    def forward(self, x):
        x = self.pool(self.stem([x])[0])
        xs = [x[:, a:b] for a, b in self.parts] if len(self.parts) > 1 else [x]
        for block in self.blocks:
            xs = block(xs)
        return paddle.concat(xs, axis=1) if len(xs) > 1 else xs[0]


def fold_into_first_conv(block, batch, direction=None, state=None):
    """Replace a blockres block's shift and the ConvBN after it by one ShiftedConvBN."""
    if isinstance(block, InvertedResidual):
        block.expand = ShiftedConvBN(block.expand, block.shift, batch, direction, state)
    else:
        layers = list(block.branch.children())
        block.branch = nn.Sequential(
            ShiftedConvBN(layers[0], block.shift, batch, direction, state), *layers[1:])
    block.shift = None


def inference_copy(model, formulation='split', batch=None):
    """A copy of a TSM in eval mode whose shifts use `formulation` (EXPORT_FORMULATIONS);
    `batch`: the clips per call the copy will be exported for (None: any)."""
    if formulation not in EXPORT_FORMULATIONS:
        raise ValueError(f"export formulation must be one of {EXPORT_FORMULATIONS}, "
                         f"got {formulation!r}")
    resnet = isinstance(model.backbone, ResNetTSM)
    if formulation == 'conv' and model.backbone.shift_place == 'block':
        # the shortcut reads the shifted input: nothing to fold into
        formulation = 'split' if resnet else 'slice'
    if formulation == 'split' and not resnet:
        formulation = 'conv' if model.backbone.shift_place == 'blockres' else 'slice'
    net = copy.deepcopy(model)
    net.eval()
    if formulation == 'split':
        net.backbone = PartsBackbone(net.backbone, batch)
        net.eval()
        return net
    backbone = net.backbone
    backbone.set_formulation('fused' if formulation == 'fused' else 'slice', batch)
    if formulation == 'conv':
        for block in backbone.blocks:
            if block.shift is not None:
                fold_into_first_conv(block, batch)
    net.eval()
    return net
