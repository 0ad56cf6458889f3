"""serve.py in a subprocess on a free loopback port, for tests and benchmarks.

    with Served(['--config', cfg, '--weights', w]).wait() as s:  # serve.py --port 0 ...
        urllib.request.urlopen(s.url + '/healthz')
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = re.compile(r'serving on (http://\S+) ')


class Served:
    """`python serve.py --port 0 ARGS`, started at once (several can start side by side);
    wait() until it is healthy; stop() ends it."""

    def __init__(self, args, env=None, timeout=180):
        self.lines, self.url = [], None
        full_env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONWARNINGS='ignore', **(env or {}))
        self.proc = subprocess.Popen([sys.executable, 'serve.py', '--port', '0', *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env, start_new_session=True)
        self._found = threading.Event()
        self._timeout = timeout

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = SERVING.search(line)
                if m and self.url is None:
                    self.url = m.group(1)
                    self._found.set()
            self._found.set()
        threading.Thread(target=read, daemon=True).start()

    def wait(self):
        """Block until /healthz answers 200 (RuntimeError with the log if it never does);
        -> self."""
        until = time.monotonic() + self._timeout
        if not self._found.wait(self._timeout) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + self.log[-4000:])
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > until:
                self.stop()
                raise RuntimeError("the server never became healthy:\n" + self.log[-4000:])
            time.sleep(0.1)
        return self

    @property
    def log(self):
        return ''.join(self.lines)

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + '/healthz', timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout=20):
        """SIGTERM (uvicorn shuts down cleanly), SIGKILL to the group if it lingers;
        -> the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
