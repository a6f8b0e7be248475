"""Progress reporting as a callback: the library reports, only the CLI renders."""

from __future__ import annotations


class Callback:
    """Receives the progress of one transfer; every method is a no-op by default."""

    def set_total(self, total: int | None) -> None:
        """The number of bytes this transfer will move, when known."""

    def advance(self, n: int) -> None:
        """``n`` more bytes were moved."""

    def message(self, text: str) -> None:
        """A one-line status, e.g. that a failed request is being retried."""


NO_PROGRESS = Callback()


class CallbackFactory:
    """Makes one Callback per transfer, named for what it moves; no-op by default."""

    def __call__(self, description: str) -> Callback:
        return NO_PROGRESS


NO_PROGRESS_FACTORY = CallbackFactory()


def copy_stream(src, dst, callback: Callback = NO_PROGRESS, bufsize: int = 256 << 10) -> int:
    """Copy a binary stream with large buffers, reporting each chunk; returns bytes copied."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    total = 0
    while True:
        n = src.readinto(buf)
        if not n:
            return total
        dst.write(view[:n])
        total += n
        callback.advance(n)


class HighWater:
    """Reports bytes to a Callback once each, however often a transfer rewinds and sends
    them again (a retried chunk, an SDK that re-reads)."""

    def __init__(self, callback: Callback, start: int = 0) -> None:
        self.callback = callback
        self.high = start

    def reached(self, pos: int) -> None:
        if pos > self.high:
            self.callback.advance(pos - self.high)
            self.high = pos


class ProgressReader:
    """A readable binary file that reports how far it has been read (each byte once) and
    otherwise behaves as the file it wraps (tell, seek, seekable, name ...)."""

    def __init__(self, f, progress: Callback | HighWater) -> None:
        self._f = f
        self._high = progress if isinstance(progress, HighWater) else HighWater(progress, f.tell())

    def read(self, n: int | None = -1) -> bytes:
        data = self._f.read(-1 if n is None else n)
        self._high.reached(self._f.tell())
        return data

    def __getattr__(self, name: str):
        return getattr(self._f, name)
