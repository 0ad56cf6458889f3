"""Evaluation reports: per-class accuracy table (CSV) and the confusion matrix as a PNG."""
import csv
import logging

import numpy as np

from . import per_class_accuracy

logger = logging.getLogger(__name__)
TICK_LIMIT = 50      # class names on the axes up to this many classes
ANNOTATE_LIMIT = 20  # counts written in the cells up to this many classes


def write_per_class_csv(confusion, names, path):
    """class index, name, videos, correct, accuracy (empty for a class without videos)."""
    confusion = np.asarray(confusion)
    acc = per_class_accuracy(confusion)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['class_index', 'class_name', 'videos', 'correct', 'accuracy'])
        for i, name in enumerate(names):
            videos = int(confusion[i].sum())
            w.writerow([i, name, videos, int(confusion[i, i]),
                        '' if np.isnan(acc[i]) else f"{acc[i]:.5f}"])
    return path


def plot_confusion(confusion, names, path, title='', group=0):
    """Rows true class, columns predicted; rows normalised to recall so classes with
    many and few videos read alike.  Names on the axes up to TICK_LIMIT classes, counts
    in the cells up to ANNOTATE_LIMIT; group=k draws lines around blocks of k classes
    (the demo's time-reversed pairs).  -> path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", path)
        return None
    cm = np.asarray(confusion, np.float64)
    n = cm.shape[0]
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    side = min(max(4.5, 0.28 * n + 2.5), 20.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
    for b in range(group, n, group) if group else ():
        ax.axhline(b - 0.5, color='gray', lw=0.6)
        ax.axvline(b - 0.5, color='gray', lw=0.6)
    if n <= TICK_LIMIT:
        size = 8 if n <= 20 else 6
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=size)
        ax.set_yticklabels(names, fontsize=size)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= ANNOTATE_LIMIT:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(int(cm[i, j])), ha='center', va='center', fontsize=7,
                    color='white' if norm[i, j] > 0.5 else 'black')
    total = cm.sum()
    acc = np.trace(cm) / total if total else 0.0
    ax.set_xlabel(f'predicted class ({n})')
    ax.set_ylabel(f'true class ({n})')
    ax.set_title(f"{title}  top-1 {acc:.4f}, {int(total)} videos".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100 if n <= TICK_LIMIT else 80)
    plt.close(fig)
    return path
