"""``resutil init`` and ``resutil-conf.yaml``: written, found, validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from resutil.config import load_config
from resutil.errors import ConfigError

from .helpers import (
    assert_one_error_line,
    make_exp,
    make_project,
    readonly_mount,
    run_cli,
    tree,
)

INIT = ("init", "--project", "MyProj", "--results-dir", "results", "--storage", "local")


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty folder to init a project in; the cwd."""
    folder = tmp_path / "proj"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_init_writes_config_gitignore_and_storage(tmp_path, here):
    remote = tmp_path / "nas" / "resutil"
    r = run_cli(*INIT, "--path", str(remote), "--yes")
    assert r.exit_code == 0, r.stderr
    assert "Initialized" in r.stderr
    conf = yaml.safe_load((here / "resutil-conf.yaml").read_text())
    assert conf == {
        "project_name": "MyProj",
        "results_dir": "results",
        "storage_type": "local",
        "storage_config": {"path": str(remote)},
    }
    gitignore = (here / "results" / ".gitignore").read_text().splitlines()
    assert "*" in gitignore and "!.gitignore" in gitignore
    assert remote.is_dir()
    # The writability probe leaves nothing behind.
    assert tree(remote) <= {"MyProj.resutil"}


def test_init_refuses_to_overwrite_without_force(tmp_path, proj):
    before = (proj.root / "resutil-conf.yaml").read_text()
    r = run_cli(*INIT, "--path", str(tmp_path / "other"), "--yes")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "already exists", "--force")
    assert (proj.root / "resutil-conf.yaml").read_text() == before
    assert not (tmp_path / "other").exists()

    r = run_cli(*INIT, "--path", str(tmp_path / "other"), "--yes", "--force")
    assert r.exit_code == 0, r.stderr
    assert load_config(proj.root / "resutil-conf.yaml").project_name == "MyProj"


def test_init_fails_clearly_when_storage_folder_cannot_be_created(tmp_path, here):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_cli(*INIT, "--path", str(blocker / "resutil"), "--yes")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "storage folder", str(blocker / "resutil"))
    assert not (here / "resutil-conf.yaml").exists()
    assert not (here / "results").exists()


def test_init_fails_clearly_on_a_read_only_storage_folder(tmp_path, here):
    remote = tmp_path / "ro"
    remote.mkdir()
    with readonly_mount(remote):
        r = run_cli(*INIT, "--path", str(remote), "--yes")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "read-only")
    assert not (here / "resutil-conf.yaml").exists()
    assert tree(remote) == set()


def test_init_needs_a_path_for_local_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli(*INIT, "--yes")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "--path")
    assert not (tmp_path / "resutil-conf.yaml").exists()


def test_config_is_found_from_a_subfolder(tmp_path, monkeypatch):
    proj = make_project(tmp_path)
    make_exp(proj, "x")
    sub = proj.root / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    r = run_cli("list", "--json")
    assert r.exit_code == 0, r.stderr
    assert [row["name"].endswith("_x") for row in json.loads(r.stdout)] == [True]
    # Relative results_dir is relative to the config file, not to the cwd.
    assert load_config().results_dir == proj.root / "results"


def test_no_config_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("list")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "resutil-conf.yaml", "resutil init")


@pytest.mark.parametrize(
    "text, needles",
    [
        ("project_name: P\nresults_dir: results\nstorag_type: local\nstorage_config: {path: /x}\n",
         ["storage_type", "storag_type"]),
        ("results_dir: results\nstorage_type: local\nstorage_config: {path: /x}\n",
         ["project_name"]),
        ("project_name: P\nresults_dir: results\nstorage_type: s3\nstorage_config: {path: /x}\n",
         ["storage_type", "s3"]),
        ("project_name: P\nresults_dir: results\nstorage_type: local\nstorage_config: {pth: /x}\n",
         ["path", "pth"]),
        ("project_name: P\nresults_dir: [unclosed\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
    ids=["misspelt-storage_type", "missing-project_name", "unknown-storage", "misspelt-path",
         "bad-yaml", "not-a-mapping"],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, monkeypatch, text, needles):
    (tmp_path / "resutil-conf.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    r = run_cli("list")
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, *needles)
    assert "resutil-conf.yaml" in line


def test_0_1_x_config_spellings_load(tmp_path):
    path = tmp_path / "resutil-conf.yaml"
    path.write_text(
        "project_name: Old\nresults_dir: results\nstorage_type: gs\n"
        "storage_config:\n  backet_name: b\n  key_file_path: key.json\nextra_key: kept\n"
    )
    conf = load_config(path)
    assert conf.storage_type == "gcs"
    assert conf.raw["extra_key"] == "kept"
    assert conf.results_dir == tmp_path / "results"


def test_resutil_config_env_points_at_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RESUTIL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="RESUTIL_CONFIG"):
        load_config()


GOOD = {"project_name": "P", "results_dir": "results", "storage_type": "local",
        "storage_config": "{path: /x}"}


def _conf(**changes: str) -> str:
    return "".join(f"{k}: {v}\n" for k, v in {**GOOD, **changes}.items())


@pytest.mark.parametrize(
    "content, key",
    [
        (_conf(project_name="Pr\xf6j").encode("latin-1"), "UTF-8"),
        (_conf(results_dir="taken"), "results_dir"),  # a file
        (_conf(results_dir="[a, b]"), "results_dir"),
        (_conf(results_dir="42"), "results_dir"),
        (_conf(project_name="[1, 2]"), "project_name"),
        (_conf(project_name="2024"), "project_name"),
        (_conf(project_name="'   '"), "project_name"),
        (_conf(project_name="team/proj"), "project_name"),
        (_conf(project_name='"a\\nb"'), "project_name"),
        (_conf(storage_config="[path, /x]"), "storage_config"),
        (_conf(storage_config="''"), "storage_config"),
        (_conf(storage_config="{path: [/x, /y]}"), "storage_config.path"),
        (_conf(storage_config="{1: /x, path: /x}"), "storage_config"),
        (_conf(storage_type="[local]"), "storage_type"),
        (_conf(storage_type="3"), "storage_type"),
    ],
    ids=["not-utf8", "results_dir-a-file", "results_dir-a-list", "results_dir-a-number",
         "project_name-a-list", "project_name-a-number", "project_name-blank",
         "project_name-with-slash", "project_name-two-lines", "storage_config-a-list",
         "storage_config-a-string", "storage_config-value-a-list",
         "storage_config-key-a-number", "storage_type-a-list", "storage_type-a-number"],
)
def test_bad_config_value_is_one_line_naming_key_and_file(tmp_path, monkeypatch, content, key):
    (tmp_path / "taken").write_text("a file where the results folder should be\n")
    conf = tmp_path / "resutil-conf.yaml"
    conf.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    for args in (["list", "--local"], ["push", "-A"], ["graph"]):
        r = run_cli(*args)
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        assert_one_error_line(r.stderr, str(conf), key)
    with pytest.raises(ConfigError, match=key):  # at load time, whatever the command
        load_config(conf)
    assert not (tmp_path / "results").exists()
