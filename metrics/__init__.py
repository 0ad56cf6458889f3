"""Classification metrics accumulated over batches (and over ranks), and the reports of
an evaluation (per-class CSV, confusion plot).

May import: utils."""
import numpy as np


def topk_correct(logits, labels, ks=(1, 5)):
    """numpy logits [B, K], labels [B] -> {k: number of samples whose label is in the top k}."""
    order = np.argsort(-logits, axis=1)
    out = {}
    for k in ks:
        top = order[:, :min(k, logits.shape[1])]
        out[k] = int((top == labels[:, None]).any(axis=1).sum())
    return out


class AccuracyMeter:
    """Sums of loss, top-1 and top-5 hits, videos seen and failed, and a confusion matrix
    (rows: true class, columns: predicted class)."""
    FIELDS = ('loss_sum', 'top1', 'top5', 'count', 'failed')

    def __init__(self, num_classes=None):
        self.sums = np.zeros(len(self.FIELDS), np.float64)
        self.confusion = None if num_classes is None else np.zeros(
            (num_classes, num_classes), np.int64)

    def add_failed(self, n):
        self.sums[4] += n

    def update(self, logits, labels, loss=None, failed=0):
        """-> (top1, top5) of this batch."""
        hits = topk_correct(logits, labels)
        n = len(labels)
        self.sums += [0.0 if loss is None else float(loss) * n, hits[1], hits[5], n, failed]
        if self.confusion is None:
            self.confusion = np.zeros((logits.shape[1],) * 2, np.int64)
        np.add.at(self.confusion, (labels, logits.argmax(axis=1)), 1)
        return hits[1] / max(n, 1), hits[5] / max(n, 1)

    def merge_ranks(self):
        """Add up the sums of every rank (no-op when not distributed)."""
        import paddle
        import paddle.distributed as dist
        if dist.get_world_size() > 1:
            t = paddle.to_tensor(self.sums)
            dist.all_reduce(t)
            self.sums = t.numpy()
            if self.confusion is not None:
                c = paddle.to_tensor(self.confusion)
                dist.all_reduce(c)
                self.confusion = c.numpy()
        return self

    def result(self):
        s = dict(zip(self.FIELDS, self.sums))
        n = max(s['count'], 1)
        out = {'top1': s['top1'] / n, 'top5': s['top5'] / n, 'loss': s['loss_sum'] / n,
               'num_videos': int(s['count']), 'num_failed': int(s['failed'])}
        if self.confusion is not None:
            per_class = per_class_accuracy(self.confusion)
            seen = ~np.isnan(per_class)
            out['mean_class_acc'] = float(per_class[seen].mean()) if seen.any() else 0.0
        return out


def per_class_accuracy(confusion):
    """Recall of each class (NaN for classes with no video)."""
    totals = confusion.sum(axis=1).astype(np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def average_views(logits, average='prob'):
    """Per-view logits [B, V, K] -> log-probabilities [B, K] of each video.

    'prob' (mmaction2's average_clips='prob'): the mean over the V views of the softmax.
    'logit' (MIT's test_models.py): the softmax of the mean of the logits.
    With one view both are the softmax of its logits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 2:
        logits = logits[:, None]
    if average == 'logit':
        return log_softmax(logits.mean(axis=1))
    if average != 'prob':
        raise ValueError(f"average must be 'prob' or 'logit', got {average!r}")
    logp = log_softmax(logits)  # log of the mean of exp(logp), computed stably
    m = logp.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(logp - m).mean(axis=1, keepdims=True)))[:, 0]


def nll(log_probs, labels):
    """Mean negative log-likelihood of the labels (the cross-entropy loss)."""
    labels = np.asarray(labels)
    return float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else 0.0
