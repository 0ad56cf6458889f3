"""The training core: the one training loop (loop), the one evaluation and prediction
(evaluate), the resilient worker loader (loader), checkpoints and the start point of a
run (checkpoint, resume), its history, the ranks of a distributed run (ranks), and the
stop on a signal (stop).

May import: utils, models, metrics, reader."""
