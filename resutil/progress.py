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
