"""Small plotting helpers for the demo (matplotlib, Agg backend: no display needed).

    plot_curves({'TSM': history, 'TSN': history}, 'curves.png')
    plot_confusion(confusion, class_names, 'confusion.png', title='TSM', group=2)
    plot_contact_sheet(frames, indices, 'frames.png', title='...')

`history` is the list train.py writes to <save_dir>/history.json: one record per
epoch, {'epoch': e, 'train': {'loss', 'top1', ...}, 'valid': {...}}.
"""
import json

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# eval.py's confusion picture, drawn the same way for the demo
from metrics.report import plot_confusion  # noqa: E402,F401

COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red')


def load_history(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _series(history, split, key):
    pts = [(r['epoch'] + 1, r[split][key]) for r in history if split in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(histories, path, chance=None, ceilings=(), dpi=80):
    """Loss and top-1 per epoch, train (solid) and valid (dashed), one colour per model;
    optional dotted chance level and labelled reference lines [(y, text)] on the top-1 plot."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for color, (name, history) in zip(COLORS, histories.items()):
        for split, style in (('train', '-'), ('valid', '--')):
            for ax, key in zip(axes, ('loss', 'top1')):
                x, y = _series(history, split, key)
                if x:
                    ax.plot(x, y, style, color=color, marker='o', markersize=3,
                            label=f"{name} {split}")
    if chance:
        axes[1].axhline(chance, color='gray', lw=0.8, ls=':')
        axes[1].text(0.98, chance, 'chance', color='gray', fontsize=7, va='bottom', ha='right',
                     transform=axes[1].get_yaxis_transform())
    for y, text in ceilings:
        axes[1].axhline(y, color='gray', lw=0.8, ls='-.')
        axes[1].text(0.98, y, text, color='gray', fontsize=7, va='bottom', ha='right',
                     transform=axes[1].get_yaxis_transform())
    axes[0].set_yscale('log')
    axes[0].set_title('loss (log scale)')
    axes[1].set_title('top-1 accuracy')
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(0, 0.93))
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_contact_sheet(frames, indices, path, title='', dpi=80):
    """One row of frames (uint8 [T, H, W, 3]), each captioned with its frame index."""
    frames = np.asarray(frames)
    n = len(frames)
    fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.9), squeeze=False)
    for ax, frame, idx in zip(axes[0], frames, indices):
        ax.imshow(frame, interpolation='nearest')
        ax.set_title(f"frame {idx}", fontsize=8)
        ax.axis('off')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
