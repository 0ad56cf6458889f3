"""train.py with faults injected from the environment, for the distributed tests
(tests/test_distributed.py launches it with paddle.distributed.launch) and the signal tests
of tests/test_crash_safety.py.  Nothing here is
part of the project; it only patches it from outside.

  TSM_FAULT_SEGV=TEXT        the decoder segfaults on videos whose name contains TEXT
  TSM_FAULT_NAN=R:E:N        rank R's Nth loss of epoch E is nan
  TSM_FAULT_NOSPACE=E        rank 0 cannot write the checkpoint that ends epoch E
  TSM_FAULT_OWN_SAVE_DIR=D   ranks other than 0 use D/rank<N> as --save_dir (a machine
                             that does not share rank 0's disk)
  TSM_FAULT_PAUSE=E:N[:S]    in rank 0's Nth step of epoch E (its forward done), print
                             PAUSED and wait for S signals (default 1) before going on, so
                             a test's signal lands in that step and no other
"""
import errno
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RANK = int(os.environ.get('PADDLE_TRAINER_ID', 0))


def segfault_on(text):
    from reader import kinetics_reader
    real = kinetics_reader.open_video

    def open_video(path, *args, **kwargs):
        if text in os.path.basename(path):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, *args, **kwargs)
    kinetics_reader.open_video = open_video


def nan_at(rank, epoch, nth):
    """Rank `rank`'s nth loss (0-based, counting the steps that had videos) of `epoch`."""
    if RANK == rank:
        on_nth_loss(epoch, nth, lambda loss: loss * float('nan'))


def on_nth_loss(epoch, nth, act):
    """act(loss) -> loss for the nth loss (0-based) of `epoch` in this process."""
    import paddle.nn.functional as F
    from jobs import train_job
    real_ce, real_train = F.cross_entropy, train_job.train_one_epoch
    state = {'epoch': None, 'calls': 0}

    def train_one_epoch(model, loader, optimizer, lr_sched, ep, *args, **kwargs):
        state.update(epoch=ep, calls=0)
        return real_train(model, loader, optimizer, lr_sched, ep, *args, **kwargs)

    def cross_entropy(*args, **kwargs):
        loss = real_ce(*args, **kwargs)
        hit = state['epoch'] == epoch and state['calls'] == nth
        state['calls'] += 1
        return act(loss) if hit else loss
    F.cross_entropy = cross_entropy
    train_job.train_one_epoch = train_one_epoch


def pause_at(epoch, nth, signals=1):
    """The step waits, inside the project's own signal handlers, for `signals` signals."""
    if RANK != 0:
        return
    import time

    def pause(loss):
        seen = []
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def recording(signum, frame):
            seen.append(signum)
            handlers[signum](signum, frame)  # the project's: may raise (a second signal)

        for s in handlers:
            signal.signal(s, recording)
        try:
            print('PAUSED', flush=True)
            while len(seen) < signals:
                time.sleep(0.02)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        return loss
    on_nth_loss(epoch, nth, pause)


def no_space_at(epoch):
    if RANK != 0:
        return
    from training import checkpoint
    real = checkpoint.save_checkpoint

    def save_checkpoint(prefix, *args, **kwargs):
        if kwargs.get('epoch') == epoch and kwargs.get('next_iter') == kwargs.get(
                'steps_per_epoch'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), prefix + '.pdopt')
        return real(prefix, *args, **kwargs)
    checkpoint.save_checkpoint = save_checkpoint


def main():
    env = os.environ
    if env.get('TSM_FAULT_SEGV'):
        segfault_on(env['TSM_FAULT_SEGV'])
    if env.get('TSM_FAULT_NAN'):
        nan_at(*map(int, env['TSM_FAULT_NAN'].split(':')))
    if env.get('TSM_FAULT_PAUSE'):
        pause_at(*map(int, env['TSM_FAULT_PAUSE'].split(':')))
    if env.get('TSM_FAULT_NOSPACE'):
        no_space_at(int(env['TSM_FAULT_NOSPACE']))
    argv = sys.argv[1:]
    if env.get('TSM_FAULT_OWN_SAVE_DIR') and RANK != 0:
        i = argv.index('--save_dir')
        argv[i + 1] = os.path.join(env['TSM_FAULT_OWN_SAVE_DIR'], f'rank{RANK}')
    import train
    train.main(argv)


if __name__ == '__main__':
    main()
