"""How predict.py shares the CPU cores between decoding videos and running the engine.

    plan = plan_predict(num_items, cfg.INFER, explicit_keys(cfg, 'INFER'), args.cpu_threads)
    plan.workers          # DataLoader worker processes that decode (0: in this process)
    plan.engine_threads   # the engine's threads (OpenVINO/ONNX Runtime/Paddle Inference)
    plan.decode_threads   # decoder threads per video (reader/video_backends.py PyAVVideo)

One video: nothing runs beside it, so it is decoded here, with every core (its keyframe
runs shared among that many decoders, or FFmpeg's frame threads), then the engine runs
with every core; no worker process is started per call.
Several videos (a folder, a list, windows): one worker per core decodes the next videos
while the engine runs on the current one, each decoder on one thread, and the engine
runs on every core too (the OS shares them out).  Why not fewer engine threads: whichever
stage is slower sets the pace, and it depends on the CPU; where the engine is the slower
stage, every core for it was faster, and where decoding is, no slower (bench/e2e.py's
`threads_grid`; the figures: docs/engines.md#cores-and-memory-at-prediction-time).  Either way the
folder takes at least (decode CPU-seconds + engine CPU-seconds) / cores.

A value the user gives wins: `-o INFER.num_reader_threads=N` (or predict.py's
--num_reader_threads) sets the workers (still at most the available cores),
--cpu_threads the engine threads.  The config file's num_reader_threads (the original's
12) is only an upper bound on the workers.
"""
import logging
from typing import NamedTuple

from utils.env import available_cpus

logger = logging.getLogger(__name__)


class Plan(NamedTuple):
    workers: int
    engine_threads: int
    decode_threads: int
    reason: str


def plan_predict(num_items, section, explicit=(), cpu_threads=0, cpus=None):
    """The plan for predicting `num_items` videos (or windows) with config `section`
    (INFER); `explicit`: the section's keys the user gave (flags, -o); `cpu_threads`:
    --cpu_threads (0: not given)."""
    cpus = cpus or available_cpus()
    cap = int(section.num_reader_threads)
    if 'num_reader_threads' in explicit:
        workers, why = min(cap, cpus), f"num_reader_threads {cap} asked, within {cpus} cores"
    elif num_items <= 1:
        workers, why = 0, "one video: decoded here, no worker process to start"
    else:
        workers = max(0, min(cap, cpus, num_items))
        why = f"{num_items} videos: the workers decode while the engine runs"
    workers = max(0, workers)
    if cpu_threads:
        engine, why = cpu_threads, why + "; engine threads from --cpu_threads"
    else:
        engine = cpus
    return Plan(workers, engine, 1 if workers else cpus, why)


def describe(plan):
    """One log line: `2 workers, engine 1 thread(s), decoder 1 thread(s) (why)`."""
    return (f"{plan.workers} workers, engine {plan.engine_threads} thread(s), decoder "
            f"{plan.decode_threads} thread(s) ({plan.reason})")
