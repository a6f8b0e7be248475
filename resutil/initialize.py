"""``resutil init``'s library part: answers in, a checked ``resutil-conf.yaml`` out.

The front end asks what its flags left open (``questions`` says what to ask, in order,
with the defaults, and ``check_answer`` judges each answer as it is given, so a person is
asked again at once); this module takes the answers as data, fills in the defaults,
validates them and checks the storage is reachable and writable (``plan_init``), then
writes the config and the .gitignore entries (``write_config``). It never prompts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import (
    CONFIG_FILE_NAME,
    ENV_OVERRIDES,
    STORAGE_ALIASES,
    UNSUPPORTED_STORAGE,
    Config,
    config_from_dict,
    save_config,
)
from .errors import ConfigError, ResutilError
from .storage import BACKENDS, open_storage

RESULTS_CANDIDATES = ("results", "result", "data", "output", "outputs", "input", "inputs")
RESULTS_GITIGNORE = (
    "# Resutil result dir\n# Automatically added by resutil\n# Files here are not managed by git\n"
    "*\n!.gitignore\n"
)


@dataclass
class InitOptions:
    """The answers to init's questions; None (or "") takes the default."""

    project_name: str | None = None
    results_dir: str | None = None
    storage_type: str | None = None
    path: str | None = None
    bucket: str | None = None
    folder_id: str | None = None
    key_file: str | None = None
    endpoint: str | None = None
    gitignore: bool | None = None  # .gitignore the results folder and the key file (None: yes)
    force: bool = False


@dataclass(frozen=True)
class Question:
    """One thing ``resutil init`` asks: the InitOptions field it answers, with its default."""

    field: str
    prompt: str
    default: str = ""


@dataclass
class InitPlan:
    """Checked answers: the config to write, and the .gitignore entries to add."""

    target: Path
    data: dict[str, Any]
    config: Config
    key_path: Path | None = None
    gitignore: bool = True  # a .gitignore in the results folder
    gitignore_key: bool = True  # the key file in the project's .gitignore (when it is inside)
    created: Path | None = None  # the local storage folder, when init had to create it

    @property
    def key_in_project(self) -> str | None:
        """The key file's path relative to the project folder, when it is inside it."""
        here = self.target.parent
        if self.key_path is None or not self.key_path.is_relative_to(here):
            return None
        return str(self.key_path.relative_to(here))


def _storage_type(answer: str | None) -> str:
    stype = answer or "local"
    return STORAGE_ALIASES.get(stype, stype)


def _default_results(here: Path) -> str:
    return next((c for c in RESULTS_CANDIDATES if (here / c).is_dir()), "results")


def questions(opts: InitOptions, here: Path) -> list[Question]:
    """What init asks, in order, given the answers so far (a storage type's own questions
    follow once the storage type is known)."""
    out = [
        Question("project_name", "Project name", here.name),
        Question("results_dir", "Folder to store results", _default_results(here)),
        Question("storage_type", f"Storage type ({'/'.join(BACKENDS)})", "local"),
    ]
    stype = _storage_type(opts.storage_type) if opts.storage_type else None
    if stype == "local":
        out.append(Question("path", "Storage folder (e.g. a NAS mount)"))
    elif stype == "gcs":
        out.append(Question("key_file", "Service-account key file (Enter: none, use "
                                        "Application Default Credentials)"))
        out.append(Question("bucket", "Bucket name"))
    elif stype == "gdrive":
        key = "key.json" if (here / "key.json").is_file() else ""
        out.append(Question("key_file", "Service-account key file", key))
        out.append(Question("folder_id", "Folder id (from the folder's URL)"))
    elif stype == "box":
        out.append(Question("key_file", "Box config.json (Enter: none, use BOX_CLIENT_ID and "
                                        "BOX_CLIENT_SECRET from the environment)"))
        out.append(Question("folder_id", "Folder id (from the folder's URL)"))
    return out


@dataclass(frozen=True)
class Check:
    """What ``check_answer`` says of one answer: a problem to show before asking again, or
    a folder that does not exist yet (init creates it when the person agrees)."""

    problem: str | None = None
    missing_folder: Path | None = None


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def check_answer(field: str, value: str, opts: InitOptions, here: Path) -> Check:
    """Judge one answer (an empty one takes the question's default) as soon as it is
    given; the whole set is judged again by ``plan_init``."""
    value = value.strip()
    if field == "project_name":
        if "/" in value or "\\" in value or value.startswith(".") or not value.isprintable():
            return Check("a project name is one line without '/' that does not start with '.'")
    elif field == "results_dir":
        target = _resolve(here, value)
        if target.exists() and not target.is_dir():
            return Check(f"{target} is a file, not a folder")
    elif field == "storage_type":
        stype = _storage_type(value)
        if stype in UNSUPPORTED_STORAGE:
            return Check(UNSUPPORTED_STORAGE[stype].format(bucket="BUCKET"))
        if stype not in BACKENDS:
            return Check(f"unknown storage type '{value}'; use {_one_of(list(BACKENDS))}")
    elif field == "path":
        if not value:
            return Check("the local storage needs a folder (a NAS mount, a shared disk)")
        root = _resolve(here, value)
        if root.exists() and not root.is_dir():
            return Check(f"{root} is a file, not a folder")
        if not root.exists():
            return Check(missing_folder=root)
        if not os.access(root, os.W_OK | os.X_OK):
            return Check(f"{root} is read-only for you; choose a folder you can write to")
    elif field == "key_file":
        if not value:
            if _storage_type(opts.storage_type) == "gdrive":
                return Check("Google Drive needs a service-account key file (JSON)")
            return Check()
        key = _resolve(here, value)
        if not key.is_file():
            return Check(f"key file {key} does not exist")
    elif field == "bucket":
        if not _BUCKET.match(value):
            return Check(f"'{value}' is not a bucket name (3-222 of a-z 0-9 . _ -)"
                         if value else "gcs needs a bucket name")
    elif field == "folder_id":
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            return Check(f"'{value}' is not a folder id (the last part of the folder's URL)"
                         if value else "a folder id is needed (the last part of its URL)")
    return Check()


def env_answers(opts: InitOptions, environ: Mapping[str, str]) -> dict[str, str]:
    """Fill the answers no flag gave from resutil 0.2.x's RESUTIL_* variables (a flag wins
    over a variable, a variable over a question); returns field -> the variable used."""
    fields = {"storage_type": "storage_type", "storage_config.bucket_name": "bucket",
              "storage_config.key_file_path": "key_file"}
    used = {}
    for var, key, types in ENV_OVERRIDES:
        value = environ.get(var, "").strip()
        name = fields[key]
        if not value or getattr(opts, name):
            continue
        if types is not None and _storage_type(opts.storage_type) not in types:
            continue
        setattr(opts, name, value)
        used[name] = var
    return used


def _resolve(here: Path, value: str) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else here / p


def _one_of(names: list[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def plan_init(opts: InitOptions, here: Path) -> InitPlan:
    """Validate the answers (defaults for those left out) and check the storage is reachable
    and writable; writes no config yet. A local storage folder that does not exist is
    created (``created`` says so: a front end tells, as it may be a NAS not mounted)."""
    target = here / CONFIG_FILE_NAME
    if target.exists() and not opts.force:
        raise ConfigError(f"{target} already exists; use --force to overwrite it")
    project = opts.project_name or here.name
    results = opts.results_dir or _default_results(here)
    stype = _storage_type(opts.storage_type)
    if stype not in BACKENDS:
        raise ConfigError(check_answer("storage_type", stype, opts, here).problem or stype)
    sconf: dict[str, Any] = {}
    if stype == "local":
        sconf["path"] = opts.path or ""
        if not sconf["path"]:
            raise ConfigError("the local storage needs a folder: --path DIR")
    else:
        if opts.key_file:
            sconf["key_file_path"] = opts.key_file
        if stype == "gcs":
            sconf["bucket_name"] = opts.bucket or ""
            if not sconf["bucket_name"]:
                raise ConfigError("gcs needs a bucket: --bucket NAME")
        else:
            if not opts.folder_id:
                raise ConfigError(f"{stype} needs a folder id: --folder-id ID")
            sconf["base_folder_id" if stype == "gdrive" else "folder_id"] = opts.folder_id
        if opts.endpoint:
            sconf["endpoint"] = opts.endpoint

    data = {"project_name": project, "results_dir": results, "storage_type": stype,
            "storage_config": sconf}
    config = config_from_dict(data, target)
    key_path = config.resolve_path(sconf["key_file_path"]) if sconf.get("key_file_path") else None
    if key_path is not None and not key_path.is_file():
        raise ConfigError(f"key file {key_path} does not exist")
    created = top = None
    if stype == "local":
        root = config.resolve_path(sconf["path"])
        top = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)
        try:
            if top is not None:
                root.mkdir(parents=True)
                created = root
        except OSError as e:
            raise ResutilError(f"cannot create storage folder {root}: {e.strerror}") from None
    storage = open_storage(config.storage_settings(config.results_dir / ".resutil" / "tmp"))
    try:
        storage.check(f"{project}.resutil")
    except BaseException:
        if top is not None:  # leave no folders behind for a storage that does not work
            _remove_empty_tree(top)
        raise
    gitignore = opts.gitignore is not False
    return InitPlan(target, data, config, key_path, gitignore, gitignore, created)


def write_config(plan: InitPlan) -> Path:
    """Create the results folder (with its .gitignore), ignore the key file, write the
    config; returns its path."""
    config = plan.config
    config.results_dir.mkdir(parents=True, exist_ok=True)
    if plan.gitignore:
        gi = config.results_dir / ".gitignore"
        if not gi.exists():
            gi.write_text(RESULTS_GITIGNORE)
    rel = plan.key_in_project
    if rel is not None and plan.gitignore_key:
        _append_gitignore(plan.target.parent / ".gitignore", rel)
    save_config(plan.target, plan.data)
    return plan.target


def init_project(opts: InitOptions, here: Path) -> Path:
    """Write ``here/resutil-conf.yaml`` from the answers, after checking the storage."""
    return write_config(plan_init(opts, here))


def _remove_empty_tree(top: Path) -> None:
    """Remove ``top`` and the folders under it if none holds a file."""
    try:
        for folder, _dirs, files in os.walk(top):
            if files:
                return
        for folder, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            os.rmdir(folder)
    except OSError:
        pass


def _append_gitignore(path: Path, entry: str) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    if entry not in lines:
        with open(path, "a") as f:
            f.write(("\n" if lines and lines[-1] else "") + f"# resutil key file\n{entry}\n")
