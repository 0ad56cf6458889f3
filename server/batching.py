"""Micro-batching: the clips of requests that arrive together go through the model in one
call.  The first clip waiting opens a batch; clips that come within `wait_s` (a few
milliseconds) join it, up to `max_batch`; while the model runs, the next batch gathers.
The model runs on one thread of its own, so the event loop keeps reading uploads."""
import asyncio
import time


class MicroBatcher:
    """`run(list of inputs) -> list of outputs` called on `executor` with up to
    `max_batch` inputs; `await submit(inputs)` -> [(output, info)] in order, info =
    {'model_s': seconds of the model call, 'batch': inputs in that call}."""

    def __init__(self, run, max_batch, wait_s, executor, observe=None):
        self.run, self.max_batch, self.wait_s = run, max(1, int(max_batch)), wait_s
        self.executor, self.observe = executor, observe
        self.queue = asyncio.Queue()
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, inputs):
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in inputs]
        for x, fut in zip(inputs, futures):
            self.queue.put_nowait((x, fut))
        return await asyncio.gather(*futures)

    async def _gather(self):
        """The next batch: the first waiting input, and those that come within wait_s."""
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        until = loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = until - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.001))  # polled: wait_for(get()) can drop an item
        return batch

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(x, f) for x, f in batch if not f.done()]  # a cancelled request's clips go
            if not live:
                continue
            t = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self.executor, self.run,
                                                     [x for x, _ in live])
            except Exception as e:  # every waiting request learns of it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            info = {'model_s': time.perf_counter() - t, 'batch': len(live)}
            if self.observe is not None:
                self.observe(info)
            for (_, fut), out in zip(live, outputs):
                if not fut.done():
                    fut.set_result((out, info))
