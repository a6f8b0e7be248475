"""The HTTP server the fake services run on."""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """A threading HTTP server that lets a client hang up quietly.

    A client that stops reading mid-response (resutil abandoning a download when the disk is
    full, a test cutting a connection) is normal here; the standard server prints a
    traceback to stderr for it, which a CLI test would then see in the command's output.
    """

    daemon_threads = True
    # The default backlog of 5 drops the SYNs of a burst of clients (threads in a test),
    # which then wait out a 1 s retransmit.
    request_queue_size = 64

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def hang_up(handler: BaseHTTPRequestHandler, reset: bool = False) -> None:
    """End the handler's connection without an answer, as a dropped network does; with
    ``reset`` the client sees a reset (RST) rather than an orderly close."""
    handler.close_connection = True
    try:
        if reset:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
