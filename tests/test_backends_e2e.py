"""The whole loop through the CLI on every backend: init checks the storage, push and pull
carry the dependency closure, an archive pushed by 0.1.x (no sidecar) lists, pulls and shows
its lineage, and experiments move across backends intact."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import yaml

from resutil.config import load_config
from resutil.metadata import read_meta
from resutil.storage import backend_class

from .helpers import Proj, chdir, make_exp, run_cli

FLAGS = {  # init flag -> storage_config key, per backend
    "local": {"--path": "path"},
    "gcs": {"--bucket": "bucket_name", "--key-file": "key_file_path", "--endpoint": "endpoint"},
    "gdrive": {"--folder-id": "base_folder_id", "--key-file": "key_file_path", "--endpoint": "endpoint"},
    "box": {"--folder-id": "folder_id", "--key-file": "key_file_path", "--endpoint": "endpoint"},
}


def init_project(root: Path, settings, name: str = "Proj") -> Proj:
    """``resutil init`` with the backend's own non-interactive flags."""
    root.mkdir(parents=True)
    args = ["init", "--project", name, "--results-dir", "results", "--storage",
            settings.storage_type, "--yes"]
    for flag, key in FLAGS[settings.storage_type].items():
        if settings.values.get(key):
            args += [flag, str(settings.values[key])]
    with chdir(root):
        r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    remote = Path(settings.values["path"]) if settings.storage_type == "local" else root / "-"
    return Proj(root, remote, name)


def cli_in(proj: Proj, *args: str):
    with chdir(proj.root):
        return run_cli(*args)


def test_init_push_pull_closure_and_verify(storage_settings, tmp_path):
    a = init_project(tmp_path / "a", storage_settings)
    conf = yaml.safe_load((a.root / "resutil-conf.yaml").read_text())
    assert conf["storage_type"] == storage_settings.storage_type
    up = make_exp(a, "raw", files={"data.csv": "x,y\n1,2\n", "blob.bin": bytes(range(256)) * 40})
    down = make_exp(a, "model", deps=[up.name], files={"model.txt": "w=3\n"})

    r = cli_in(a, "push", down.name[:6] + down.name[6:22])  # identity resolves too
    assert r.exit_code == 0, r.stderr
    assert f"Pushed {up.name}" in r.stderr and f"Pushed {down.name}" in r.stderr

    b = init_project(tmp_path / "b", storage_settings)
    listed = {row["name"]: row for row in __import__("json").loads(cli_in(b, "list", "--json").stdout)}
    assert set(listed) == {up.name, down.name}
    assert all(row["remote"] and not row["local"] for row in listed.values())

    r = cli_in(b, "pull", down.name)
    assert r.exit_code == 0, r.stderr
    assert (b.results / up.name / "data.csv").read_text() == "x,y\n1,2\n"
    assert (b.results / down.name / "model.txt").read_text() == "w=3\n"
    assert [d.name for d in read_meta(b.results / down.name).dependencies] == [up.name]
    r = cli_in(b, "verify")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("ok ") == 4  # two experiments, local and remote each


def test_init_refuses_unreachable_storage(storage_settings, tmp_path):
    """A wrong bucket/folder is caught before resutil-conf.yaml is written."""
    values = dict(storage_settings.values)
    key = {"local": "path", "gcs": "bucket_name", "gdrive": "base_folder_id", "box": "folder_id"}[
        storage_settings.storage_type]
    values[key] = (str(tmp_path / "file-not-folder" / "x") if key == "path" else "nope-does-not-exist-1")
    if key == "path":
        (tmp_path / "file-not-folder").write_text("a file")
    settings = type(storage_settings)(values=values, storage_type=storage_settings.storage_type)
    root = tmp_path / "p"
    root.mkdir()
    args = ["init", "--project", "Proj", "--storage", settings.storage_type, "--yes"]
    for flag, k in FLAGS[settings.storage_type].items():
        if values.get(k):
            args += [flag, str(values[k])]
    with chdir(root):
        r = run_cli(*args)
    assert r.exit_code == 1
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert not (root / "resutil-conf.yaml").exists()


def _zip_01x(folder_files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, text in folder_files.items():
            zf.writestr(rel, text)
    return buf.getvalue()


def test_archives_pushed_by_01x_list_pull_and_show_lineage(storage_settings, tmp_path):
    """0.1.x wrote only <project>/<name>.zip, with dependency entries like results/<name>."""
    proj = init_project(tmp_path / "p", storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    up, down = "aapiyl_20240706T064339_raw", "aapiym_20240706T064440_train"
    storage.write_bytes("Proj", f"{up}.zip", _zip_01x({
        "data.txt": "raw\n",
        "resutil-exp.yaml": yaml.safe_dump({"args": "prep.py", "result_dir": f"results/{up}",
                                            "dependency": [], "git": {"commit_hash": None, "uncommited_files": []}}),
    }))
    storage.write_bytes("Proj", f"{down}.zip", _zip_01x({
        "model.txt": "m\n",
        "resutil-exp.yaml": yaml.safe_dump({"args": f"train.py results/{up}", "result_dir": f"results/{down}",
                                            "dependency": [f"results/{up}"],
                                            "git": {"commit_hash": "abc1234", "uncommited_files": []}}),
    }))
    r = cli_in(proj, "list", "--json")
    assert {row["name"] for row in __import__("json").loads(r.stdout)} == {up, down}
    r = cli_in(proj, "graph", "--format", "mermaid")
    assert r.exit_code == 0, r.stderr
    assert "-->" in r.stdout
    r = cli_in(proj, "pull", "aapiym")
    assert r.exit_code == 0, r.stderr
    assert (proj.results / up / "data.txt").read_text() == "raw\n"  # upstream came along
    r = cli_in(proj, "show", down)
    assert up in r.stdout


@pytest.mark.parametrize("direction", ["local->backend", "backend->local"])
def test_experiments_move_across_backends_intact(storage_settings, local_settings, tmp_path, direction):
    first, second = (local_settings, storage_settings) if direction.startswith("local") else (
        storage_settings, local_settings)
    a = init_project(tmp_path / "a", first)
    exp = make_exp(a, "moved", files={"x/a.txt": "a\n" * 1000, "b.bin": bytes(5000)})
    assert cli_in(a, "push", exp.name).exit_code == 0
    b = init_project(tmp_path / "b", first)
    assert cli_in(b, "pull", exp.name).exit_code == 0
    digest = read_meta(b.results / exp.name).manifest.digest
    # re-point project b at the other backend and push it there, then pull into c
    (b.root / "resutil-conf.yaml").unlink()
    with chdir(b.root):
        args = ["init", "--project", "Proj", "--results-dir", "results", "--storage",
                second.storage_type, "--yes"]
        for flag, key in FLAGS[second.storage_type].items():
            if second.values.get(key):
                args += [flag, str(second.values[key])]
        assert run_cli(*args).exit_code == 0
    assert load_config(b.root / "resutil-conf.yaml").storage_type == second.storage_type
    assert cli_in(b, "push", exp.name).exit_code == 0
    c = init_project(tmp_path / "c", second)
    assert cli_in(c, "pull", exp.name).exit_code == 0
    assert read_meta(c.results / exp.name).manifest.digest == digest
    assert (c.results / exp.name / "x" / "a.txt").read_text() == "a\n" * 1000
