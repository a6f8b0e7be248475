"""``resutil://`` queries: what a Snakefile writes and what it means.

    resutil://<experiment>/<path>    a file or folder of an existing experiment
    resutil://new:<comment>/<path>   an output of a job, in the experiment the job makes
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from snakemake_interface_storage_plugins.io import WILDCARD_REGEX

from resutil.naming import comment_problem

SCHEME = "resutil://"
NEW = "new:"
# Snakemake's workflow sources archive (stored through the default storage provider when
# jobs run without a shared file system): a workflow file, not a result.
SOURCES_RE = re.compile(r"^snakemake-workflow-sources\.[0-9a-f]{64}\.tar\.xz$")


class InvalidQuery(ValueError):
    """A query this plugin cannot handle; the message says why."""


@dataclass(frozen=True)
class Query:
    """A parsed ``resutil://`` query."""

    experiment: str  # as written (name, identity, prefix), or the comment of a new: query
    path: str  # relative path inside the experiment, no trailing slash
    new: bool

    @property
    def is_sources(self) -> bool:
        """Whether this is Snakemake's workflow sources archive."""
        return bool(SOURCES_RE.match(self.path.rsplit("/", 1)[-1]))

    def local_suffix(self) -> str:
        return f"{'new' if self.new else 'exp'}/{self.experiment}/{self.path}"


def parse_query(query: str) -> Query:
    """Split a query on ``://`` and the first ``/`` (urlparse would cut at '#' and '?')."""
    if not query.startswith(SCHEME):
        raise InvalidQuery(f"must start with {SCHEME}")
    exp, _, path = query[len(SCHEME):].partition("/")
    path = path.rstrip("/")
    if not exp:
        raise InvalidQuery("no experiment: use resutil://<experiment>/<path>")
    if not path:
        raise InvalidQuery("no path inside the experiment: use resutil://<experiment>/<path>")
    if path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
        raise InvalidQuery(
            "the path inside the experiment must be relative, without '.', '..' or '//'")
    if exp.startswith(NEW):
        comment = exp[len(NEW):]
        if not comment:
            raise InvalidQuery("new: needs a comment: resutil://new:<comment>/<path>")
        problem = None if WILDCARD_REGEX.search(comment) else comment_problem(comment)
        if problem:
            raise InvalidQuery(f"invalid comment {comment!r}: {problem}")
        return Query(comment, path, True)
    if ":" in exp and not WILDCARD_REGEX.search(exp):
        raise InvalidQuery(
            f"'{exp}' is neither an experiment nor new:<comment> (experiment names have no ':')"
        )
    return Query(exp, path, False)


def has_wildcards(query: str) -> bool:
    return bool(WILDCARD_REGEX.search(query))


def pattern_regex(query: str) -> re.Pattern[str]:
    """A regular expression matching the queries a query with ``{wildcards}`` stands for."""
    out, pos = [], 0
    for m in WILDCARD_REGEX.finditer(query):
        out.append(re.escape(query[pos:m.start()]))
        constraint = m.group("constraint")
        out.append(f"(?:{constraint.strip()})" if constraint else ".+")
        pos = m.end()
    out.append(re.escape(query[pos:]))
    return re.compile("".join(out) + r"\Z")


# What Snakemake appends to a file in its job log events: " (send to storage)" and the like.
_ANNOTATION = re.compile(r" \([^()]*(?:storage|storage uri)\)\Z")


def queries_in(files: object) -> list[str]:
    """The resutil queries among the files of a Snakemake job log event."""
    out = []
    for f in files if isinstance(files, (list, tuple)) else ():
        text = _ANNOTATION.sub("", str(f))
        if text.startswith(SCHEME):
            out.append(text)
    return out
