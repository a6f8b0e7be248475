"""``resutil init``'s library part: answers in, a checked ``resutil-conf.yaml`` out.

The front end asks what its flags left open (``questions`` says what to ask, in order,
with the defaults); this module takes the answers as data, fills in the defaults,
validates them and checks the storage is reachable and writable (``plan_init``), then
writes the config and the .gitignore entries (``write_config``). It never prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CONFIG_FILE_NAME, STORAGE_ALIASES, Config, config_from_dict, save_config
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
    elif stype in BACKENDS:  # the cloud ones: a key file, then where in the account
        key = "box_config.json" if stype == "box" else "key.json"
        prompt = "Key file path" if stype == "gdrive" else "Key file path (Enter for none)"
        out.append(Question("key_file", prompt, key))
        if stype == "gcs":
            out.append(Question("bucket", "Bucket name"))
        else:
            out.append(Question("folder_id", "Folder id (from the folder's URL)"))
    return out


def plan_init(opts: InitOptions, here: Path) -> InitPlan:
    """Validate the answers (defaults for those left out) and check the storage is reachable
    and writable (a local storage folder is created); writes no config yet."""
    target = here / CONFIG_FILE_NAME
    if target.exists() and not opts.force:
        raise ConfigError(f"{target} already exists; use --force to overwrite it")
    project = opts.project_name or here.name
    results = opts.results_dir or _default_results(here)
    stype = _storage_type(opts.storage_type)
    if stype not in BACKENDS:
        names = list(BACKENDS)
        raise ConfigError(f"unknown storage type '{stype}'; use "
                          f"{', '.join(names[:-1])} or {names[-1]}")
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
    if stype == "local":
        root = config.resolve_path(sconf["path"])
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResutilError(f"cannot create storage folder {root}: {e.strerror}") from None
    key_path = config.resolve_path(sconf["key_file_path"]) if sconf.get("key_file_path") else None
    if key_path is not None and not key_path.is_file():
        raise ConfigError(f"key file {key_path} does not exist")
    storage = open_storage(config.storage_settings(config.results_dir / ".resutil" / "tmp"))
    storage.check(f"{project}.resutil")
    gitignore = opts.gitignore is not False
    return InitPlan(target, data, config, key_path, gitignore, gitignore)


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


def _append_gitignore(path: Path, entry: str) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    if entry not in lines:
        with open(path, "a") as f:
            f.write(("\n" if lines and lines[-1] else "") + f"# resutil key file\n{entry}\n")
