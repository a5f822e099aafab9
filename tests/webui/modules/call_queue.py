"""modules/call_queue.py (1.10.1): the FIFO lock every generation holds, and the UI path's wrapper."""

import collections
import threading

from modules import shared


class FIFOLock:
    """modules/fifo_lock.FIFOLock: a lock that lets waiters in in arrival order (no `locked()`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inner_lock = threading.Lock()
        self._pending_threads = collections.deque()

    def acquire(self, blocking=True):
        with self._inner_lock:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            release_event = threading.Event()
            self._pending_threads.append(release_event)
        release_event.wait()
        return self._lock.acquire()

    def release(self):
        with self._inner_lock:
            if self._pending_threads:
                self._pending_threads.popleft().set()
            self._lock.release()

    __enter__ = acquire

    def __exit__(self, t, v, tb):
        self.release()


queue_lock = FIFOLock()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    """As 1.10.1: `state.end()` is reached only when `func` returns; an exception leaves the job set."""

    def f(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job="task(test)")
            res = func(*args, **kwargs)
            shared.state.end()
        return res

    return f
