"""Logging set-up, called from the entry scripts' main() only."""
import logging
import os
import sys
import warnings


def setup_logging(level=logging.INFO):
    """Log lines on stdout; ranks other than 0 log warnings and errors only.
    Call before Paddle is imported, so its import-time warnings are filtered."""
    rank = int(os.environ.get('PADDLE_TRAINER_ID', 0))
    warnings.filterwarnings('ignore', message='No ccache found')
    warnings.filterwarnings('ignore', message='When training, we now always track global mean')
    import paddle  # noqa: F401  (Paddle 2.6's import resets the root logger: import it first)
    fmt = '[%(asctime)s] %(levelname)s %(name)s: %(message)s'
    if rank:
        fmt = f'[rank {rank}] ' + fmt
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt,
                        datefmt='%H:%M:%S', stream=sys.stdout, force=True)
    try:  # ffmpeg inside decord prints every broken NAL unit; our warnings name the file
        import decord
        decord.logging.set_level(decord.logging.QUIET)
    except (ImportError, AttributeError):
        pass
