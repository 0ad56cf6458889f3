"""Devices, threads, seeds, distributed ranks and the C allocator."""
import ctypes
import logging
import os
import random

import numpy as np
import paddle

logger = logging.getLogger(__name__)


class EnvError(RuntimeError):
    """Asked for something this machine does not have; one-line message."""


def gpu_available():
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def set_device(use_gpu):
    if use_gpu:
        if not paddle.device.is_compiled_with_cuda():
            raise EnvError("--use_gpu True, but this Paddle is built without CUDA "
                           "(install paddlepaddle-gpu, or pass --use_gpu False)")
        if paddle.device.cuda.device_count() == 0:
            raise EnvError("--use_gpu True, but no GPU is visible (check CUDA_VISIBLE_DEVICES, "
                           "or pass --use_gpu False)")
        rank_dev = int(os.environ.get('FLAGS_selected_gpus', '0').split(',')[0])
        paddle.set_device(f'gpu:{rank_dev}')
    else:
        paddle.set_device('cpu')


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_cpu_threads(threads=None, world_size=1):
    """Paddle uses one CPU thread unless told; default: the cores available, shared among
    the ranks of this machine.  Must run before the first op to take effect everywhere."""
    n = threads or max(1, available_cpus() // max(1, world_size))
    os.environ['OMP_NUM_THREADS'] = str(n)
    core = getattr(getattr(paddle, 'base', None), 'core', None)
    if core is not None and hasattr(core, 'set_num_threads'):
        core.set_num_threads(n)
    return n


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Have glibc keep the memory a run frees for the next run.  Paddle Inference frees
    its activations after every run; by default glibc hands the large ones back to the
    kernel (mmap, heap trim) and faults them in again, zeroed, on the next run (what that
    cost: docs/engines.md#cores-and-memory-at-prediction-time).  Blocks up to
    `mmap_threshold` (glibc's maximum: 32 MB) come from the heap, which is trimmed only
    past `trim_threshold` free at its top.  Process-wide; -> False where there is no
    glibc (then nothing changes)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))
                and mallopt(m_trim_threshold, int(trim_threshold)))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def world():
    """(rank, world_size) from the launcher's environment."""
    return (int(os.environ.get('PADDLE_TRAINER_ID', 0)),
            int(os.environ.get('PADDLE_TRAINERS_NUM', 1)))


def init_distributed():
    rank, size = world()
    if size > 1:
        paddle.distributed.init_parallel_env()
    return rank, size


def setup_runtime(cfg, args):
    """Threads, device and process group for this process; -> (rank, world size).
    An explicit --use_gpu True without a GPU is an error; the config's default
    (TRAIN.use_gpu: True, as the original) falls back to the CPU with a warning."""
    rank, size = world()
    local = int(os.environ.get('PADDLE_LOCAL_SIZE', size))
    set_cpu_threads(args.cpu_threads, local)
    use_gpu = args.use_gpu
    if use_gpu is None:
        use_gpu = cfg.TRAIN.use_gpu and gpu_available()
        if cfg.TRAIN.use_gpu and not use_gpu:
            logger.warning("no GPU here: running on the CPU (TRAIN.use_gpu is True in the config)")
    set_device(use_gpu)
    init_distributed()
    return rank, size
