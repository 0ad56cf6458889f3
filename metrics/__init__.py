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
    """Sums of loss, top-1 and top-5 hits and the number of videos seen."""
    FIELDS = ('loss_sum', 'top1', 'top5', 'count', 'failed')

    def __init__(self):
        self.sums = np.zeros(len(self.FIELDS), np.float64)

    def update(self, logits, labels, loss=None, failed=0):
        hits = topk_correct(logits, labels)
        n = len(labels)
        self.sums += [0.0 if loss is None else float(loss) * n, hits[1], hits[5], n, failed]
        return hits[1] / max(n, 1), hits[5] / max(n, 1)

    def merge_ranks(self):
        """Add up the sums of every rank (no-op when not distributed)."""
        import paddle
        import paddle.distributed as dist
        if dist.get_world_size() > 1:
            t = paddle.to_tensor(self.sums)
            dist.all_reduce(t)
            self.sums = t.numpy()
        return self

    def result(self):
        s = dict(zip(self.FIELDS, self.sums))
        n = max(s['count'], 1)
        return {'top1': s['top1'] / n, 'top5': s['top5'] / n, 'loss': s['loss_sum'] / n,
                'num_videos': int(s['count']), 'num_failed': int(s['failed'])}
