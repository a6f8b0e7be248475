"""The terminal UI (``resutil`` at a terminal, ``resutil ui``): a front end like ``cli.py``.

It browses ``catalog`` and calls the very workflow functions the CLI commands call (add,
comment, push, pull, rm, reproduce, diff, show); it adds no behaviour of its own. Textual
is imported only here, when the UI starts, never by ``import resutil`` or ``resutil --help``.

- ``rows``: what the table shows of an ``Entry`` (cells, metric columns) and the filter
  (text, status, date); plain Python, no Textual.
- ``app``: ``ResutilApp``, the screen (filter bar, table, detail pane, progress bar,
  footer), its keys, and the workers (threads) that load the catalog, read metrics and run
  each action; ``TextualProgress`` turns the workflows' progress callbacks into its bar.
- ``screens``: the modal screens: a question with an answer (new, comment), a yes/no
  confirmation (rm, reproduce), where to remove from, a text to read (diff, help).
- ``app.tcss``: the layout and colours.
"""

from __future__ import annotations

from typing import Any


def run(project: Any) -> None:
    """Open the terminal UI on ``project`` until the person quits it."""
    from .app import ResutilApp

    ResutilApp(project).run()
