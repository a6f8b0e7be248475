"""A step's fingerprint: what its result depends on, hashed.

The step's definition (``run``, ``params``, ``env``), the identities of its upstream
experiments, and its code: the content of the files it runs, not the state of the whole
repository. Those are the files named in ``run`` (its script), the project modules they
import (followed through ``import`` statements, not into installed packages) and the files
matching its ``deps:`` globs. Committing a file changes nothing (a commit does not change
content); editing any of these files, committed or not, makes the step stale, and the
status names the file. A finished experiment carrying the same fingerprint is the step's
result, up to date.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from .. import git
from ..metadata import hash_file
from ..naming import identity_of
from .spec import Step

FINGERPRINT_FORMAT = 2  # 1: the whole tree's commit and diff (any commit made every step stale)
MAX_NAMED_FILE = 1 << 20  # files named in `run` that are not code: hashed up to this size
MAX_SOURCE = 4 << 20  # a Python file larger than this is hashed, not parsed for imports
CODE_SUFFIXES = (".py", ".pyw")


class StepCode:
    """The files each step runs, and their content hashes (each file read once)."""

    def __init__(self, root: Path) -> None:
        self.root = root  # the pipeline file's folder: the steps' working directory
        self._hashes: dict[Path, str | None] = {}
        self._imports: dict[Path, list[Path]] = {}

    def files(self, step: Step) -> dict[str, str]:
        """path (relative to the pipeline's folder) -> content hash of every file the step's
        result depends on: its sources (``sources``) and its ``deps:`` globs."""
        out = {}
        for path in [*self.sources(step), *self._globbed(step)]:
            digest = self._hash(path)
            if digest is not None:
                out[self._rel(path)] = digest
        return dict(sorted(out.items()))

    def sources(self, step: Step) -> list[Path]:
        """The files named in ``run`` and the project modules the Python ones import."""
        entry, named = self._named(step)
        seen: dict[Path, None] = {}
        todo = list(named)
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen[path] = None
            if path.suffix in CODE_SUFFIXES:
                roots = [entry.get(path, path.parent), self.root]
                todo.extend(p for p in self._imported(path, roots) if p not in seen)
        return list(seen)

    def _named(self, step: Step) -> tuple[dict[Path, Path], list[Path]]:
        """The files ``run`` names, and for each script the folder Python puts first on
        ``sys.path`` (its own folder; the working directory for ``-m``)."""
        try:
            tokens = shlex.split(step.run)
        except ValueError:
            tokens = step.run.split()
        entry: dict[Path, Path] = {}
        named: list[Path] = []
        for i, token in enumerate(tokens):
            if i and tokens[i - 1] == "-m" and "{" not in token:
                found = _module_file(token, [self.root])
                if found is not None:
                    entry[found] = self.root
                    named.append(found)
                continue
            if "{" in token or token.startswith("-") or len(token) > 255:
                continue
            path = (self.root / token)
            try:
                if not path.is_file():
                    continue
                if path.suffix not in CODE_SUFFIXES and path.stat().st_size > MAX_NAMED_FILE:
                    continue
            except OSError:
                continue
            path = Path(_norm(path))
            named.append(path)
        return entry, named

    def _globbed(self, step: Step) -> list[Path]:
        out = []
        for pattern in step.deps:
            try:
                out += sorted(p for p in self.root.glob(pattern) if p.is_file())
            except (OSError, ValueError):
                continue
        return [Path(_norm(p)) for p in out]

    def _imported(self, path: Path, roots: list[Path]) -> list[Path]:
        """The files of the project modules ``path`` imports (found under ``roots`` or, for
        relative imports, beside it); installed packages are not followed."""
        key = path
        if key in self._imports:
            return self._imports[key]
        found: list[Path] = []
        try:
            if path.stat().st_size <= MAX_SOURCE:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            else:
                tree = None
        except (OSError, SyntaxError, ValueError):
            tree = None
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found += _module_files(alias.name, roots)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                    search = [base]
                    module = node.module or ""
                else:
                    search, module = roots, node.module or ""
                found += _module_files(module, search) if module else []
                for alias in node.names:  # `from pkg import mod` may name a submodule
                    sub = f"{module}.{alias.name}" if module else alias.name
                    hit = _module_file(sub, search)
                    if hit is not None:
                        found.append(hit)
        unique = list(dict.fromkeys(Path(_norm(p)) for p in found))
        self._imports[key] = unique
        return unique

    def _hash(self, path: Path) -> str | None:
        if path not in self._hashes:
            try:
                self._hashes[path] = hash_file(path)
            except OSError:
                self._hashes[path] = None
        return self._hashes[path]

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _norm(path: Path) -> str:
    import os

    return os.path.normpath(os.path.abspath(path))


def _module_file(dotted: str, roots: list[Path]) -> Path | None:
    """The source file of module ``dotted`` under one of ``roots`` (a package's
    ``__init__.py``), or None when it is not there (an installed or built-in module)."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        return None
    for root in roots:
        base = root.joinpath(*parts)
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            try:
                if candidate.is_file():
                    return candidate
            except OSError:
                continue
    return None


def _module_files(dotted: str, roots: list[Path]) -> list[Path]:
    """The files ``import a.b.c`` runs: the packages on the way and the module itself."""
    parts = dotted.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        hit = _module_file(".".join(parts[:i]), roots)
        if hit is not None:
            out.append(hit)
    return out


def head_commit(folder: Path) -> str | None:
    """The commit HEAD points at in the work tree holding ``folder`` (for the record)."""
    top = git.toplevel(folder)
    return git.head(top) if top is not None else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def fingerprint(step: Step, needs: dict[str, str], files: dict[str, str]) -> str:
    """The step's fingerprint; ``needs`` maps each key to its upstream experiment's name,
    ``files`` each file it runs to its content hash (``StepCode.files``)."""
    payload: dict[str, Any] = {
        "format": FINGERPRINT_FORMAT, "step": step.name, "run": step.run, "params": step.params,
        "env": step.env, "needs": {k: identity_of(v) for k, v in needs.items()},
        "files": files, "deps": step.deps,
    }
    return _sha(json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")))
