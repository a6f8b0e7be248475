"""The whole loop through the CLI on every backend: init checks the storage, push and pull
carry the dependency closure, an archive pushed by 0.1.x (no sidecar) lists, pulls and shows
its lineage, and experiments move across backends intact."""

from __future__ import annotations

import json

import pytest
import yaml

from resutil.config import load_config
from resutil.metadata import EXP_FILE, read_meta
from resutil.storage import backend_class

from .helpers import (
    cli_in,
    cli_ok,
    init_args,
    make_exp,
    make_project,
    meta_01x,
    run_cli,
    zip_01x,
)

# test_stream_pull.py imports cli_in and init_project from here (new code: from .helpers).
init_project = make_project


def test_init_push_pull_closure_and_verify(storage_settings, tmp_path):
    a = make_project(tmp_path / "a", storage_settings)
    conf = yaml.safe_load((a.root / "resutil-conf.yaml").read_text())
    assert conf["storage_type"] == storage_settings.storage_type
    up = make_exp(a, "raw", files={"data.csv": "x,y\n1,2\n", "blob.bin": bytes(range(256)) * 40})
    down = make_exp(a, "model", deps=[up.name], files={"model.txt": "w=3\n"})

    r = cli_ok("push", down.name[:6] + down.name[6:22], cwd=a.root)  # identity resolves too
    assert f"Pushed {up.name}" in r.stderr and f"Pushed {down.name}" in r.stderr

    b = make_project(tmp_path / "b", storage_settings)
    listed = {row["name"]: row for row in json.loads(cli_in(b, "list", "--json").stdout)}
    assert set(listed) == {up.name, down.name}
    assert all(row["remote"] and not row["local"] for row in listed.values())

    cli_ok("pull", down.name, cwd=b.root)
    assert (b.results / up.name / "data.csv").read_text() == "x,y\n1,2\n"
    assert (b.results / down.name / "model.txt").read_text() == "w=3\n"
    assert [d.name for d in read_meta(b.results / down.name).dependencies] == [up.name]
    r = cli_ok("verify", cwd=b.root)
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
    r = run_cli(*init_args(settings.storage_type, values), cwd=root)
    assert r.exit_code == 1
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert not (root / "resutil-conf.yaml").exists()


def test_archives_pushed_by_01x_list_pull_and_show_lineage(storage_settings, tmp_path):
    """0.1.x wrote only <project>/<name>.zip, with dependency entries like results/<name>."""
    proj = make_project(tmp_path / "p", storage_settings)
    storage = backend_class(storage_settings.storage_type)(storage_settings)
    up, down = "aapiyl_20240706T064339_raw", "aapiym_20240706T064440_train"
    storage.write_bytes("Proj", f"{up}.zip", zip_01x({
        "data.txt": "raw\n", EXP_FILE: meta_01x(up, args="prep.py")}))
    storage.write_bytes("Proj", f"{down}.zip", zip_01x({
        "model.txt": "m\n",
        EXP_FILE: meta_01x(down, [up], args=f"train.py results/{up}", commit="abc1234")}))
    r = cli_in(proj, "list", "--json")
    assert {row["name"] for row in json.loads(r.stdout)} == {up, down}
    r = cli_ok("graph", "--format", "mermaid", cwd=proj.root)
    assert "-->" in r.stdout
    cli_ok("pull", "aapiym", cwd=proj.root)
    assert (proj.results / up / "data.txt").read_text() == "raw\n"  # upstream came along
    r = cli_in(proj, "show", down)
    assert up in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["local->backend", "backend->local"])
def test_experiments_move_across_backends_intact(storage_settings, local_settings, tmp_path, direction):
    first, second = (local_settings, storage_settings) if direction.startswith("local") else (
        storage_settings, local_settings)
    a = make_project(tmp_path / "a", first)
    exp = make_exp(a, "moved", files={"x/a.txt": "a\n" * 1000, "b.bin": bytes(5000)})
    cli_ok("push", exp.name, cwd=a.root)
    b = make_project(tmp_path / "b", first)
    cli_ok("pull", exp.name, cwd=b.root)
    digest = read_meta(b.results / exp.name).manifest.digest
    # re-point project b at the other backend and push it there, then pull into c
    (b.root / "resutil-conf.yaml").unlink()
    cli_ok(*init_args(second.storage_type, second.values), cwd=b.root)
    assert load_config(b.root / "resutil-conf.yaml").storage_type == second.storage_type
    cli_ok("push", exp.name, cwd=b.root)
    c = make_project(tmp_path / "c", second)
    cli_ok("pull", exp.name, cwd=c.root)
    assert read_meta(c.results / exp.name).manifest.digest == digest
    assert (c.results / exp.name / "x" / "a.txt").read_text() == "a\n" * 1000
