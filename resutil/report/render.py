"""The report's Jinja2 templates (``templates/*.html.j2``, shipped in the package), with
autoescaping on for everything: a comment like ``<script>alert(1)</script>`` stays text.

Jinja2 is imported here only, when a report is written, so ``import resutil`` never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")


class Renderer:
    """The compiled templates; each method returns a page as UTF-8 bytes."""

    def __init__(self) -> None:
        import jinja2

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)),
            autoescape=True,  # every template, whatever its file name ends with
            undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters["size"] = human_size
        self._index = self.env.get_template("index.html.j2")
        self._experiment = self.env.get_template("experiment.html.j2")

    def index(self, **context: Any) -> bytes:
        """The index page: the table of experiments and the lineage graph."""
        import markupsafe

        context["svg"] = markupsafe.Markup(context["svg"])  # built escaped by svg.py
        return self._index.render(**context).encode("utf-8")

    def experiment(self, **context: Any) -> bytes:
        """One experiment's page."""
        return self._experiment.render(**context).encode("utf-8")


def human_size(n: int) -> str:
    """1234567 -> '1.2 MB'."""
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"
