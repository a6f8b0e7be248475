"""A step's fingerprint: what its result depends on, hashed.

The step's definition (``run``, ``params``, ``env``), the code (the committed tree and the
uncommitted changes to tracked files, the pipeline and config files left out, plus any file
named in ``run``) and the identities of its upstream experiments. A finished experiment
carrying the same fingerprint is the step's result, up to date.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import git
from ..metadata import hash_file
from ..naming import identity_of
from .spec import Step

FINGERPRINT_FORMAT = 1
MAX_NAMED_FILE = 1 << 20  # files named in `run` are hashed only up to this size


@dataclass(frozen=True)
class CodeState:
    """The code a step runs: HEAD, the committed tree, the uncommitted changes."""

    commit: str | None = None
    committed: str | None = None  # digest of HEAD's tree, the pipeline/config files left out
    uncommitted: str | None = None  # digest of `git diff HEAD` ("" when clean)

    @property
    def digest(self) -> str:
        return _sha(f"{self.committed}\0{self.uncommitted}")

    def as_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "committed": self.committed, "uncommitted": self.uncommitted}


def code_state(folder: Path, leave_out: Iterable[Path] = ()) -> CodeState:
    """The code fingerprint of the git work tree holding ``folder`` (empty without git).

    The files in ``leave_out`` (the pipeline file, the config) do not count: changing one
    step's params must not make every step stale, nor must committing that change.
    """
    # One git process for the work tree and HEAD; a second only when there is no commit.
    out = git.run(["rev-parse", "--show-toplevel", "--verify", "-q", "HEAD"], folder)
    commit: str | None = None
    if out is not None:
        top_text, _, commit = out.rstrip("\n").rpartition("\n")
        top: Path | None = Path(top_text.strip())
    else:
        top = git.toplevel(folder)
    if top is None:
        return CodeState()
    skip = set()
    for p in leave_out:
        try:
            skip.add(p.resolve().relative_to(top.resolve()).as_posix())
        except ValueError:
            pass
    paths = ["--", ".", *(f":(exclude){p}" for p in sorted(skip))]
    diff_args = ["diff", "--binary", "--no-color", "--no-ext-diff"]
    if commit:
        diff = git.run([*diff_args, "HEAD", *paths], top)
        committed = _tree_digest(top, skip)
    else:  # no commit yet: what is staged, and the changes on top of it
        staged = git.run(["ls-files", "-s", *paths], top) or ""
        diff = staged + (git.run([*diff_args, *paths], top) or "")
        committed = None
    return CodeState(commit, committed, _sha(diff) if diff else "")


def _tree_digest(top: Path, skip: set[str]) -> str | None:
    """HEAD's tree without the ``skip`` paths, listing only the folders on their way."""
    on_path = {""}
    for p in skip:
        parts = p.split("/")
        on_path.update("/".join(parts[:i]) for i in range(1, len(parts)))
    h = hashlib.sha256()
    for d in sorted(on_path):
        out = git.run(["ls-tree", "-z", "HEAD", *([d + "/"] if d else [])], top)
        if out is None:
            return None
        for entry in out.split("\0"):
            rel = entry.partition("\t")[2]
            if entry and rel not in skip and rel not in on_path:
                h.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def named_files(step: Step, cwd: Path) -> dict[str, str]:
    """Content hashes of the (small) files the step's ``run`` names, e.g. its script.

    They count even when untracked or outside git, where the code state sees nothing.
    """
    try:
        tokens = shlex.split(step.run)
    except ValueError:
        tokens = step.run.split()
    out = {}
    for token in tokens:
        if "{" in token or token.startswith("-") or len(token) > 255:
            continue
        path = cwd / token
        try:
            if path.is_file() and path.stat().st_size <= MAX_NAMED_FILE:
                out[token] = hash_file(path)
        except OSError:
            continue
    return out


def fingerprint(step: Step, needs: dict[str, str], code: CodeState, files: dict[str, str]) -> str:
    """The step's fingerprint; ``needs`` maps each key to its upstream experiment's name."""
    payload = {
        "format": FINGERPRINT_FORMAT, "step": step.name, "run": step.run, "params": step.params,
        "env": step.env, "needs": {k: identity_of(v) for k, v in needs.items()},
        "code": code.digest, "files": files,
    }
    return _sha(json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")))
