"""The HTTP server the fake services run on."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """A threading HTTP server that lets a client hang up quietly.

    A client that stops reading mid-response (resutil abandoning a download when the disk is
    full, a test cutting a connection) is normal here; the standard server prints a
    traceback to stderr for it, which a CLI test would then see in the command's output.
    """

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
