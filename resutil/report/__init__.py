"""``resutil report``: a static HTML report of experiments, readable with no server and no
network (open ``index.html`` from a file share, or attach the folder).

- ``build``: gathers what is shown (``catalog`` for the experiments and their metrics,
  ``partial`` for the files of remote-only ones, ``compare.code_diff``) and writes the
  pages atomically (``write_report``).
- ``svg``: the lineage graph laid out in Python (no Graphviz), nodes linking to pages.
- ``render``: the Jinja2 templates in ``templates/`` (autoescaped everywhere), loaded only
  when a report is written.

Layout of a report folder: ``index.html`` (a sortable, filterable table of experiments with
their metrics, and the lineage graph), ``exp/<identity>.html`` (one page per experiment:
metadata, arguments, code diff, images, small text results, files) and
``files/<identity>/...`` (the images the pages show).
"""

from __future__ import annotations

from .build import Report, refuse_inside_results, write_report

__all__ = ["Report", "refuse_inside_results", "write_report"]
