"""Export formulations of a TSM: the same function, arranged for Paddle Inference + oneDNN.

    net = inference_copy(model, 'conv', batch=1)   # a copy; `model` is left as it is

  fused  the shifts as Paddle's fused op (what the eager model runs).  oneDNN has no
         kernel for it: every shift converts the activations out of oneDNN's layout and
         back (measured 2x the time of the same network without shifts).
  slice  the shifts as split + frame moves + concat (models/temporal_shift.py), bit for
         bit the fused op.  oneDNN keeps activations channels-last, where a channel
         concat copies small chunks per pixel: still ~1.3x.
  conv   each shift folded into the convolution after it (default for export).  A
         convolution acts on every frame alone and is linear in its input channels, so

             conv(shift(x)) = conv(x, W with the shifted folds' input channels zeroed)
                            + conv(concat(shift_frames(x_f) for folds f), W[:, folds])

         The shifted tensor is never built: only the folds (1/4 of the channels) move,
         by whole frames (contiguous copies in any layout), and their convolution's sum
         lands in the main one's output (oneDNN's fused residual sum).  The extra work is
         a quarter more multiply-adds on one 1x1 convolution per block, all of it in
         oneDNN's fast kernels.  BN is folded into the
         weights, as Paddle Inference does for the other convolutions.  The result equals
         the eager model up to float32 rounding (summation order), ~1e-6 relative.

`batch` (clips per call) fixes the batch size of the exported program: the frame moves
are then static slices; None keeps the batch dynamic (a 5-D view per fold, a little
slower).  shift_place 'block' shifts the block input for the shortcut too, so there the
shift cannot be folded away and 'conv' falls back to 'slice'.
"""
import copy

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .temporal_shift import fold_bounds, shift_frames

EXPORT_FORMULATIONS = ('fused', 'slice', 'conv')


def fold_bn(conv_bn):
    """A ConvBN's convolution and inference-mode BN as one (weight, bias), float32 numpy."""
    bn = conv_bn.bn
    f64 = lambda t: t.numpy().astype('float64')  # noqa: E731
    scale = f64(bn.weight) / np.sqrt(f64(bn._variance) + bn._epsilon)
    weight = f64(conv_bn.conv.weight) * scale[:, None, None, None]
    bias = f64(bn.bias) - f64(bn._mean) * scale
    return weight.astype('float32'), bias.astype('float32')


def _param(layer, name, value):
    p = layer.create_parameter(list(value.shape), dtype='float32',
                               default_initializer=nn.initializer.Assign(value))
    setattr(layer, name, p)  # registers it under `name`
    return p


class ShiftedConvBN(nn.Layer):
    """act(bn(conv(temporal_shift(x)))) of a shifted ConvBN, without building the shifted
    tensor (see the module docstring)."""

    def __init__(self, conv_bn, shift, batch=None):
        super().__init__()
        weight, bias = fold_bn(conv_bn)
        self.folds, rest = fold_bounds(weight.shape[1], shift.shift_ratio, shift.direction)
        main = weight.copy()
        main[:, :rest] = 0  # the shifted folds come in through their own convolutions
        _param(self, 'weight_main', main)
        _param(self, 'bias', bias)
        # the folds are contiguous from channel 0: their moved copies, side by side, meet
        # the first `rest` input channels of the weight
        _param(self, 'weight_folds', np.ascontiguousarray(weight[:, :rest]))
        conv = conv_bn.conv
        self.stride, self.padding = conv._stride, conv._padding
        self.relu = conv_bn.act is not None
        self.seg_num, self.batch = shift.seg_num, batch

    def forward(self, x):  # [N*T, C, H, W] -> [N*T, C_out, H', W']
        y = F.conv2d(x, self.weight_main, self.bias, stride=self.stride, padding=self.padding)
        folds = x[:, :self.folds[-1][1]]  # one copy of the shifted channels
        moved = [shift_frames(folds[:, start:stop] if len(self.folds) > 1 else folds,
                              self.seg_num, step, self.batch)
                 for start, stop, step in self.folds]
        moved = paddle.concat(moved, axis=1) if len(moved) > 1 else moved[0]
        y = F.conv2d(moved, self.weight_folds, stride=self.stride, padding=self.padding) + y
        return F.relu(y) if self.relu else y


def inference_copy(model, formulation='conv', batch=None):
    """A copy of a TSM in eval mode whose shifts use `formulation` (EXPORT_FORMULATIONS);
    `batch`: the clips per call the copy will be exported for (None: any)."""
    if formulation not in EXPORT_FORMULATIONS:
        raise ValueError(f"export formulation must be one of {EXPORT_FORMULATIONS}, "
                         f"got {formulation!r}")
    net = copy.deepcopy(model)
    net.eval()
    backbone = net.backbone
    backbone.set_formulation('fused' if formulation == 'fused' else 'slice', batch)
    if formulation == 'conv' and backbone.shift_place == 'blockres':
        for block in backbone.blocks:
            if block.shift is not None:
                layers = list(block.branch.children())
                block.branch = nn.Sequential(ShiftedConvBN(layers[0], block.shift, batch),
                                             *layers[1:])
                block.shift = None
    net.eval()
    return net
