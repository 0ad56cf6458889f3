"""Classification metrics accumulated over batches (and over ranks)."""
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
