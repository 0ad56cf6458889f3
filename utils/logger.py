"""Logging set-up, called from the entry scripts' main() only."""
import logging
import sys


def setup_logging(rank=0, level=logging.INFO):
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
