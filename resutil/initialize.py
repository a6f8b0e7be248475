"""``resutil init``: ask what 0.1.x asked, check the storage, write resutil-conf.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ui
from .config import CONFIG_FILE_NAME, config_from_dict, save_config
from .errors import ConfigError, ResutilError
from .storage import open_storage

RESULTS_CANDIDATES = ("results", "result", "data", "output", "outputs", "input", "inputs")
RESULTS_GITIGNORE = (
    "# Resutil result dir\n# Automatically added by resutil\n# Files here are not managed by git\n"
    "*\n!.gitignore\n"
)


@dataclass
class InitOptions:
    """The answers to init's questions; None means ask (or take the default)."""

    project_name: str | None = None
    results_dir: str | None = None
    storage_type: str | None = None
    path: str | None = None
    bucket: str | None = None
    folder_id: str | None = None
    key_file: str | None = None
    endpoint: str | None = None
    gitignore: bool | None = None
    yes: bool = False
    force: bool = False


def init_project(opts: InitOptions, here: Path) -> Path:
    """Write ``here/resutil-conf.yaml``; returns its path."""
    target = here / CONFIG_FILE_NAME
    ask = not opts.yes and ui.interactive()
    if target.exists() and not opts.force:
        if not (ask and ui.confirm(f"{target} exists. Overwrite it?", default=False)):
            raise ConfigError(f"{target} already exists; use --force to overwrite it")

    def value(current: str | None, question: str, default: str = "") -> str:
        if current:
            return current
        return ui.ask(question, default) if ask else default

    project = value(opts.project_name, "Project name", here.name)
    default_results = next((c for c in RESULTS_CANDIDATES if (here / c).is_dir()), "results")
    results = value(opts.results_dir, "Folder to store results", default_results)
    stype = value(opts.storage_type, "Storage type (local/gcs/gdrive/box)", "local")
    if stype == "gs":
        stype = "gcs"
    sconf: dict[str, Any] = {}
    if stype == "local":
        sconf["path"] = value(opts.path, "Storage folder (e.g. a NAS mount)", "")
        if not sconf["path"]:
            raise ConfigError("the local storage needs a folder: --path DIR")
    elif stype in ("gcs", "gdrive", "box"):
        key_default = {"gcs": "key.json", "gdrive": "key.json", "box": "box_config.json"}[stype]
        key = value(opts.key_file, "Key file path (Enter for none)" if stype != "gdrive" else "Key file path", key_default if ask else "")
        if key:
            sconf["key_file_path"] = key
        if stype == "gcs":
            sconf["bucket_name"] = value(opts.bucket, "Bucket name")
            if not sconf["bucket_name"]:
                raise ConfigError("gcs needs a bucket: --bucket NAME")
        else:
            fid = value(opts.folder_id, "Folder id (from the folder's URL)")
            if not fid:
                raise ConfigError(f"{stype} needs a folder id: --folder-id ID")
            sconf["base_folder_id" if stype == "gdrive" else "folder_id"] = fid
        if opts.endpoint:
            sconf["endpoint"] = opts.endpoint
    else:
        raise ConfigError(f"unknown storage type '{stype}'; use local, gcs, gdrive or box")

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
    storage = open_storage(config, scratch_dir=config.results_dir / ".resutil" / "tmp")
    storage.check(f"{project}.resutil")

    gitignore = opts.gitignore
    if gitignore is None:
        gitignore = ui.confirm(f"Add a .gitignore to {results}?", default=True) if ask else True
    config.results_dir.mkdir(parents=True, exist_ok=True)
    if gitignore:
        gi = config.results_dir / ".gitignore"
        if not gi.exists():
            gi.write_text(RESULTS_GITIGNORE)
    if key_path is not None and key_path.is_relative_to(here):
        rel = str(key_path.relative_to(here))
        add_key = opts.gitignore
        if add_key is None:
            add_key = ui.confirm(f"Add {rel} to .gitignore?", default=True) if ask else True
        if add_key:
            _append_gitignore(here / ".gitignore", rel)
    save_config(target, data)
    return target


def _append_gitignore(path: Path, entry: str) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    if entry not in lines:
        with open(path, "a") as f:
            f.write(("\n" if lines and lines[-1] else "") + f"# resutil key file\n{entry}\n")
