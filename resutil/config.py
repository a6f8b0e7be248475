"""``resutil-conf.yaml``: found by walking up from the current directory (no chdir).

Precedence is visible: an explicit path, then ``RESUTIL_CONFIG``, then the nearest
``resutil-conf.yaml`` above the current directory. Unknown keys survive a save.

Settings follow one order, resolved once into the frozen ``Config``: a command-line flag,
then a ``RESUTIL_*`` environment variable (resutil 0.2.x's ``RESUTIL_STORAGE_TYPE``,
``RESUTIL_GCS_BUCKET_NAME``, ``RESUTIL_GCS_KEY_FILE_PATH``), then the file, then the
default. ``Config.overrides`` says which values came from the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_atomic
from .errors import ConfigError, ResutilError
from .storage import BACKENDS, StorageSettings

CONFIG_FILE_NAME = "resutil-conf.yaml"
STORAGE_TYPES = tuple(BACKENDS)  # the backend registry decides what exists
# 0.1.x accepted "gs" for Google Cloud Storage.
STORAGE_ALIASES = {"gs": "gcs"}
REQUIRED_KEYS = ("project_name", "results_dir", "storage_type")
# resutil 0.2.x's environment variables: (variable, config key, storage types it applies to;
# None: any). A storage_config key is written "storage_config.<key>".
ENV_OVERRIDES = (
    ("RESUTIL_STORAGE_TYPE", "storage_type", None),
    ("RESUTIL_GCS_BUCKET_NAME", "storage_config.bucket_name", ("gcs",)),
    ("RESUTIL_GCS_KEY_FILE_PATH", "storage_config.key_file_path", ("gcs",)),
)
# Storage types of other resutil versions, with what to use instead (one line each).
UNSUPPORTED_STORAGE = {
    "server": "storage_type 'server' (resutil 0.2's resutil-server with 'resutil login') is "
              "not supported here; the server kept experiments in a GCS bucket: use "
              "storage_type: gcs with bucket_name {bucket} and a service-account key "
              "(key_file_path) or Application Default Credentials "
              "(gcloud auth application-default login)",
}


@dataclass(frozen=True)
class Config:
    """A loaded config; paths are absolute, ``raw`` keeps every key of the file."""

    path: Path
    project_name: str
    results_dir: Path
    storage_type: str
    storage_config: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    # config key -> the environment variable its value came from (see ENV_OVERRIDES)
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The folder holding the config file; relative paths in it are relative to this."""
        return self.path.parent

    def resolve_path(self, value: str | os.PathLike[str]) -> Path:
        """A path from the config, made absolute against the config's folder."""
        p = Path(os.path.expandvars(str(value))).expanduser()
        return p if p.is_absolute() else self.root / p

    def storage_settings(self, scratch_dir: Path | None = None) -> StorageSettings:
        """What the storage backend is configured with (and nothing else of the config)."""
        return StorageSettings(values=self.storage_config, storage_type=self.storage_type,
                               config_path=self.path, scratch_dir=scratch_dir)


def find_config_file(start: Path | None = None) -> Path:
    """The config file to use, or ConfigError saying how to create one."""
    env = os.environ.get("RESUTIL_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"RESUTIL_CONFIG points at {p}, which does not exist")
        return p.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILE_NAME} in {here} or any folder above it; run 'resutil init' first"
    )


def load_config(path: Path | None = None, start: Path | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config file, with the environment's overrides applied."""
    path = path or find_config_file(start)
    data = read_yaml(path, ConfigError, "; fix or recreate it")
    merged, overrides = apply_env(data, os.environ if environ is None else environ)
    config = config_from_dict(merged, path, overrides)
    if overrides:
        return replace(config, raw=dict(data))  # what a save writes: the file's own values
    return config


def remote_off(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the remote is off for this process: ``RESUTIL_NO_REMOTE`` (or
    ``RESUTIIL_REMOTE``, the spelling resutil 0.2.x's README gives for it)."""
    env = os.environ if environ is None else environ
    return bool(env.get("RESUTIL_NO_REMOTE") or env.get("RESUTIIL_REMOTE"))


def apply_env(data: Any, environ: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """``data`` (a parsed config) with the ``RESUTIL_*`` overrides in ``environ`` applied,
    and which keys they set; ``data`` itself is left as it is."""
    if not isinstance(data, dict):
        return data, {}
    out = dict(data)
    overrides: dict[str, str] = {}
    for var, key, types in ENV_OVERRIDES:
        value = environ.get(var, "").strip()
        if not value:
            continue
        stype = out.get("storage_type")
        if types is not None and STORAGE_ALIASES.get(stype, stype) not in types:
            continue
        if key.startswith("storage_config."):
            sub = key.split(".", 1)[1]
            sconf = dict(out.get("storage_config") or {}) if isinstance(
                out.get("storage_config") or {}, dict) else {}
            if sub == "bucket_name":
                sconf.pop("backet_name", None)  # 0.1.x's spelling: the variable replaces it
            sconf[sub] = value
            out["storage_config"] = sconf
        else:
            out[key] = value
        overrides[key] = var
    return out, overrides


MAX_YAML_BYTES = 16 << 20  # a config or pipeline file is a few KB


def read_yaml(path: Path, error: type[ResutilError], hint: str = "") -> Any:
    """A YAML file's content, or ``error`` with one line naming the file (and the line)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise error(f"{path} is larger than {MAX_YAML_BYTES >> 20} MiB{hint}")
    try:
        return yaml.load(raw.decode("utf-8"), Loader=loader)
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text{hint}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise error(f"{path} is not valid YAML{where}{hint}") from None
    except (ValueError, RecursionError):  # a number too long to convert, deep nesting
        raise error(f"{path} is not usable YAML{hint}") from None


def config_from_dict(data: Any, path: Path, overrides: Mapping[str, str] | None = None
                     ) -> Config:
    """Validate a parsed config mapping; ConfigError naming the key and the file (or the
    environment variable its value came from, per ``overrides``)."""
    overrides = overrides or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of keys to values; run 'resutil init'")
    missing = [k for k in REQUIRED_KEYS if data.get(k) in (None, "")]
    if missing:
        hint = _did_you_mean(missing[0], data)
        raise ConfigError(f"{path}: missing key '{missing[0]}'{hint}")
    for key in REQUIRED_KEYS:
        value = data[key]
        if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
            what = "blank" if isinstance(value, str) and not value.strip() else (
                "not one line of text" if isinstance(value, str) else f"{_kind(value)}, not text")
            raise ConfigError(f"{path}: {key} is {what}; write it as e.g. {key}: {_EXAMPLE[key]}")
    sconf = data.get("storage_config")
    sconf = {} if sconf is None else sconf
    stype = STORAGE_ALIASES.get(data["storage_type"], data["storage_type"])
    if stype not in STORAGE_TYPES:
        if stype in UNSUPPORTED_STORAGE:
            bucket = sconf.get("bucket_name") if isinstance(sconf, dict) else None
            raise ConfigError(f"{path}: " + UNSUPPORTED_STORAGE[stype].format(
                bucket=bucket if isinstance(bucket, str) and bucket else "BUCKET"))
        if "storage_type" in overrides:
            raise ConfigError(f"{overrides['storage_type']}={stype} is not a storage type; "
                              f"use one of {', '.join(STORAGE_TYPES)}")
        raise ConfigError(
            f"{path}: storage_type '{stype}' is not one of {', '.join(STORAGE_TYPES)}"
        )
    if not isinstance(sconf, dict):
        raise ConfigError(f"{path}: storage_config must be a mapping of keys to values "
                          f"(it is {_kind(sconf)}); e.g. storage_config: {{path: /mnt/nas}}")
    for key, value in sconf.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: storage_config has a key that is {_kind(key)}, not a name")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: storage_config.{key} is {_kind(value)}; give one value")
    project = data["project_name"]
    if "/" in project or "\\" in project or project.startswith("."):
        raise ConfigError(f"{path}: project_name '{project}' cannot contain '/' or start with '.'")
    results = Path(os.path.expandvars(data["results_dir"])).expanduser()
    results = results if results.is_absolute() else path.parent / results
    try:
        if not results.is_dir() and results.exists():
            raise ConfigError(f"{path}: results_dir {results} is a file, not a folder; "
                              "point results_dir at a folder")
    except OSError as e:  # a parent is a file (ENOTDIR is not "missing" here), no access
        raise ConfigError(f"{path}: results_dir {results} cannot be used: {e.strerror}") from None
    return Config(
        path=path,
        project_name=project,
        results_dir=results,
        storage_type=stype,
        storage_config=dict(sconf),
        raw=dict(data),
        overrides=dict(overrides),
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXAMPLE = {"project_name": "MyProj", "results_dir": "results", "storage_type": "local"}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return "empty" if value is None else "a string" if isinstance(value, str) else "not text"


def _did_you_mean(key: str, data: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, [str(k) for k in data], n=1, cutoff=0.7)
    return f" (found '{close[0]}': misspelt?)" if close else ""


def save_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write the config atomically, keeping key order and unknown keys."""
    write_atomic(path, yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True
                                      ).encode("utf-8"))


def require_key(config: Config, key: str, *aliases: str) -> Any:
    """A storage_config value, or ConfigError naming the key and the file."""
    for k in (key, *aliases):
        value = config.storage_config.get(k)
        if value not in (None, ""):
            return value
    hint = _did_you_mean(key, config.storage_config)
    raise ConfigError(
        f"{config.path}: storage_config needs '{key}' for storage_type {config.storage_type}{hint}"
    )
