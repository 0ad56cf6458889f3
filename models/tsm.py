"""TSM: a 2D CNN (ResNet or MobileNetV2) with temporal shifts, averaged over segments
(Lin, Gan and Han, 2019)."""
import math

import paddle
import paddle.nn as nn

from .registry import register
from .mobilenet_v2 import MobileNetV2TSM
from .resnet import ResNetTSM, fluid_names
from .weight_files import OPTION_KEYS, WeightsError

BACKBONES = ('resnet', 'mobilenetv2')
HEADS = ('feature_mean', 'logit_mean')
# What a set of weights may need changed to compute what it was trained to compute.


def _dropout_mode(head):
    # the model zoo's fluid default vs. the PyTorch/PaddleVideo convention (see TSM)
    return 'downscale_in_infer' if head == 'feature_mean' else 'upscale_in_train'


@register('TSM')
class TSM(nn.Layer):
    """x float32 [N, seg_num, 3*seglen, H, W] -> logits [N, num_classes].

    head='feature_mean' is the model zoo's: per-frame average pool, dropout, mean over
    segments, FC.  Its dropout is fluid's default `downgrade_in_infer`: nothing is
    scaled in training and features are multiplied by (1-p) at inference; the released
    weights depend on that.  head='logit_mean' (MIT, mmaction2) applies the FC per frame
    and averages the logits, with dropout scaled in training instead.
    """

    def __init__(self, num_classes=400, seg_num=8, seglen=1, num_layers=50,
                 shift_ratio=0.125, shift_direction='paddle', shift_place='blockres',
                 dropout=0.5, head='feature_mean', shift_every=1, backbone='resnet'):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.seg_num, self.seglen, self.head = seg_num, seglen, head
        self.backbone_name = backbone
        # the ResNet depth; None for MobileNetV2 (width 1.0 only), which ignores num_layers
        self.backbone_depth = num_layers if backbone == 'resnet' else None
        shift = (seg_num, shift_ratio, shift_direction, shift_place, shift_every)
        self.backbone = (ResNetTSM(num_layers, 3 * seglen, *shift) if backbone == 'resnet'
                         else MobileNetV2TSM(3 * seglen, *shift))
        feat = self.backbone.out_channels
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.dropout = nn.Dropout(p=dropout, mode=_dropout_mode(head))
        stdv = 1.0 / math.sqrt(feat)
        self.fc = nn.Linear(
            feat, num_classes,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Uniform(-stdv, stdv)),
            # the original: FC bias learns at 2x the rate and has no L2 decay
            bias_attr=paddle.ParamAttr(learning_rate=2.0, regularizer=paddle.regularizer.L2Decay(0.0),
                                       initializer=nn.initializer.Constant(0.0)))

    def forward(self, x):
        n, t, c, h, w = x.shape
        x = x.reshape([-1, c, h, w])  # [N, T, 3L, H, W] -> [N*T, 3L, H, W]
        x = self.backbone(x)
        x = self.avgpool(x).flatten(1)  # [N*T, F, 1, 1] -> [N*T, F]
        x = self.dropout(x)
        if self.head == 'feature_mean':
            x = x.reshape([-1, t, x.shape[-1]]).mean(axis=1)  # [N*T, F] -> [N, T, F] -> [N, F]
            return self.fc(x)
        x = self.fc(x)
        return x.reshape([-1, t, x.shape[-1]]).mean(axis=1)  # [N*T, K] -> [N, T, K] -> [N, K]

    def options(self):
        """The settings released weights depend on (OPTION_KEYS), as a plain dict."""
        bb = self.backbone
        return dict(shift_direction=bb.shift_direction, shift_ratio=bb.shift_ratio,
                    shift_place=bb.shift_place, shift_every=bb.shift_every, head=self.head,
                    dropout=self.dropout.p)

    def set_options(self, **options):
        """Change any of OPTION_KEYS in place (no parameter changes); -> {key: (old, new)}
        for the values that changed.  Used when loading weights trained under another
        convention (e.g. MIT's shift direction and logit-averaging head)."""
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(f"unknown TSM option(s) {unknown} (known: {list(OPTION_KEYS)})")
        old = self.options()
        new = dict(old, **options)
        if new['head'] not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {new['head']!r}")
        if not 0 <= new['dropout'] < 1:
            raise ValueError(f"dropout must be in [0, 1), got {new['dropout']}")
        self.backbone.set_shift(new['shift_ratio'], new['shift_direction'], new['shift_place'],
                                new['shift_every'])
        self.head = new['head']
        self.dropout.p, self.dropout.mode = new['dropout'], _dropout_mode(new['head'])
        return {k: (old[k], new[k]) for k in OPTION_KEYS if old[k] != new[k]}

    def fluid_names(self):
        """{state_dict key: model-zoo name}; the FC is fc_0 as fluid named it."""
        if self.backbone_name != 'resnet':
            raise WeightsError(f"model-zoo names are ResNet weights; the model's backbone is "
                               f"{self.backbone_name}: set MODEL.backbone: resnet")
        names = fluid_names(self.backbone, 'backbone')
        names.update({'fc.weight': 'fc_0.w_0', 'fc.bias': 'fc_0.b_0'})
        return names

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MODEL
        return cls(num_classes=m.num_classes, seg_num=m.seg_num, seglen=m.seglen,
                   num_layers=m.num_layers, shift_ratio=m.shift_ratio,
                   shift_direction=m.shift_direction, shift_place=m.shift_place,
                   dropout=m.dropout, head=m.head, backbone=m.backbone)
