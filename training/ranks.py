"""Keeping the processes of a data-parallel run in step.

Every collective call (gradient all-reduce, the per-step status, a broadcast) must be
made by every rank in the same order, or the run hangs (NCCL) or dies (gloo: "Connection
reset by peer").  So a rank never decides alone to skip a step or to stop: it reports
what it saw in the step's status, which every rank receives, and what only rank 0 can
know (the checkpoint on its disk, whether it could write one) is broadcast from rank 0.
With one process every call here is local and free.
"""
import threading

import numpy as np
import paddle


class StepStatus:
    """What the ranks saw in one step, the same on every rank."""

    def __init__(self, videos, nonfinite_ranks):
        self.videos = videos  # real videos in the step, over all ranks
        self.nonfinite_ranks = nonfinite_ranks  # ranks whose loss was nan or inf


class Ranks:
    def __init__(self, rank=0, world=1):
        self.rank, self.world = rank, world

    @property
    def distributed(self):
        return self.world > 1

    def step_status(self, videos, loss_finite):
        """One all-reduce: [videos, loss non-finite on rank 0, ..., on rank w-1]."""
        flags = np.zeros(1 + self.world, dtype=np.int64)
        flags[0], flags[1 + self.rank] = videos, int(not loss_finite)
        if self.distributed:
            t = paddle.to_tensor(flags)
            paddle.distributed.all_reduce(t)
            flags = t.numpy()
        return StepStatus(int(flags[0]), [r for r in range(self.world) if flags[1 + r]])

    def any(self, flag):
        """True on every rank when `flag` is true on any."""
        if not self.distributed:
            return bool(flag)
        t = paddle.to_tensor(np.array([int(bool(flag))], dtype=np.int64))
        paddle.distributed.all_reduce(t)
        return int(t.numpy()[0]) > 0

    def wait_for_all(self, timeout=30.0):
        """Until every rank reaches this point, or `timeout` s (a rank that never comes
        must not hang this one); -> whether all came."""
        if not self.distributed:
            return True
        done = threading.Event()

        def reach():
            self.any(False)
            done.set()
        threading.Thread(target=reach, daemon=True).start()
        return done.wait(timeout)

    def from_rank0(self, obj):
        """Rank 0's `obj` (picklable) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        paddle.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def model_from_rank0(self, model):
        """Rank 0's model options (shift, head: what loading weights may have changed)
        and every parameter and buffer, on every rank."""
        if not self.distributed:
            return
        if hasattr(model, 'options'):
            options = self.from_rank0(model.options())
            if self.rank != 0:
                model.set_options(**options)
        for tensor in model.state_dict().values():
            paddle.distributed.broadcast(tensor, src=0)

    def buffers_from_rank0(self, model):
        """Rank 0's batch-norm statistics on every rank.  DataParallel keeps the
        parameters equal but each rank's running statistics are its own; rank 0's are
        the ones a checkpoint saves, so validation uses them everywhere."""
        if self.distributed:
            for tensor in model.buffers():
                paddle.distributed.broadcast(tensor, src=0)
