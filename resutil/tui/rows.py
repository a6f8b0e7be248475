"""What the UI's table shows of each experiment, and which experiments its filter keeps.

Plain Python (no Textual), so it is quick to test and to time. Cells are plain strings:
the table draws 10,000 rows of them without building a renderable per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..catalog import Entry

# As ``resutil list --status`` takes them (cli.LIST_STATUSES).
STATUSES = ("running", "finished", "failed", "interrupted", "dead", "broken")
COLUMNS = (("mark", " "), ("experiment", "Experiment"), ("comment", "Comment"),
           ("date", "Date"), ("status", "Status"), ("where", "Where"), ("step", "Step"))
MAX_METRIC_COLUMNS = 12  # the most widely reported ones; all of them are in the detail pane
MARK = "●"


def cells(entry: Entry, metrics: list[str], marked: bool = False) -> list[str]:
    """The row of one experiment: the fixed columns, then its value of each metric."""
    values = entry.metrics
    return [MARK if marked else "", entry.identity, entry.comment, short_date(entry.date),
            entry.status, entry.where, entry.step,
            *[number(values[m]) if m in values else "" for m in metrics]]


def short_date(iso: str) -> str:
    """``2024-07-06T06:43:39`` as ``2024-07-06 06:43``."""
    return iso[:16].replace("T", " ")


def number(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class Filter:
    """Which experiments the table shows: every word of ``text`` in its name (so its
    comment) or step, any case; its status (as ``resutil list`` shows it: a "dead" run, a
    "running?" one counts as running); started at ``since`` or later."""

    text: str = ""
    status: str = ""
    since: datetime | None = None

    def keeps(self, entry: Entry) -> bool:
        if self.status and entry.status.rstrip("?") != self.status:
            return False
        if self.since is not None and datetime.fromisoformat(entry.date) < self.since:
            return False
        if self.text:
            hay = f"{entry.name} {entry.step}".lower()
            return all(word in hay for word in self.text.lower().split())
        return True

    def describe(self) -> str:
        """The filter in a few words ("" when it keeps everything)."""
        parts = [f'"{self.text}"' if self.text.strip() else "", self.status,
                 f"since {self.since:%Y-%m-%d %H:%M}" if self.since else ""]
        return ", ".join(p for p in parts if p)
