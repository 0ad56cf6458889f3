"""The same TSM in PyTorch (eager), its weights copied from a Paddle TSM: what
`vs_pytorch` compares against.  Optional: bench/shift_cost.py skips it without torch."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def shift(x, seg_num, ratio):
    """Paddle direction: fold 0 from t-1, fold 1 from t+1, zero-filled (MIT's slicing)."""
    nt, c, h, w = x.shape
    c1, c2 = int(c * ratio), int(c * 2 * ratio)
    x = x.view(nt // seg_num, seg_num, c, h, w)  # [N*T, C, H, W] -> [N, T, C, H, W]
    out = torch.zeros_like(x)
    out[:, 1:, :c1] = x[:, :-1, :c1]
    out[:, :-1, c1:c2] = x[:, 1:, c1:c2]
    out[:, :, c2:] = x[:, :, c2:]
    return out.view(nt, c, h, w)


class ConvBN(nn.Module):
    def __init__(self, src):
        super().__init__()
        conv = src.conv
        w = conv.weight.numpy()
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=conv._stride[0],
                              padding=conv._padding if isinstance(conv._padding, int)
                              else conv._padding[0], bias=False)
        self.bn = nn.BatchNorm2d(w.shape[0], eps=src.bn._epsilon)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(w))
            for ours, theirs in (('weight', 'weight'), ('bias', 'bias'),
                                 ('running_mean', '_mean'), ('running_var', '_variance')):
                getattr(self.bn, ours).copy_(torch.from_numpy(getattr(src.bn, theirs).numpy()))
        self.act = src.act is not None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class Block(nn.Module):
    def __init__(self, src):
        super().__init__()
        self.branch = nn.Sequential(*[ConvBN(c) for c in src.branch.children()])
        self.shortcut = ConvBN(src.shortcut) if src.shortcut is not None else None
        self.shift = src.shift

    def forward(self, x):
        short = x if self.shortcut is None else self.shortcut(x)
        if self.shift is not None:
            x = shift(x, self.shift.seg_num, self.shift.shift_ratio)
        return F.relu(short + self.branch(x))


class TorchTSM(nn.Module):
    """feature_mean head, blockres shifts, paddle direction: the released configuration."""

    def __init__(self, model):
        super().__init__()
        bb = model.backbone
        assert bb.shift_place == 'blockres' and bb.shift_direction == 'paddle'
        assert model.head == 'feature_mean'
        self.stem = ConvBN(bb.stem)
        self.blocks = nn.Sequential(*[Block(b) for b in bb.blocks])
        self.fc = nn.Linear(*model.fc.weight.shape)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(model.fc.weight.numpy().T))
            self.fc.bias.copy_(torch.from_numpy(model.fc.bias.numpy()))
        self.keep = 1 - model.dropout.p  # fluid's downgrade_in_infer dropout
        self.eval()

    def forward(self, x):
        n, t, c, h, w = x.shape
        x = F.max_pool2d(self.stem(x.reshape(n * t, c, h, w)), 3, 2, 1)
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1) * self.keep
        return self.fc(x.reshape(n, t, -1).mean(1))


def outputs(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def warm_call(model, x, threads):
    """PyTorch's TSM of the Paddle `model` (same weights) on `threads` threads, run once on
    clip x as a warm-up -> a call that runs it again: what vs_pytorch times."""
    torch.set_num_threads(threads)
    net = TorchTSM(model)

    def call():
        return outputs(net, x)
    call()
    return call
