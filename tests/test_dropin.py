"""A drop-in for resutil 0.1.x and 0.2.x (PyPI): their scripts, CLI forms, environment
variables and config run unchanged, and the version sorts above every release there."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from packaging.version import Version

from resutil.config import load_config

from .helpers import (
    REPO,
    assert_one_error_line,
    cli_ok as ok,
    make_exp,
    make_project,
    read_exp,
    read_exp_in_zip,
    run_cli,
    run_script,
    write_script,
)

# Every release of resutil on PyPI (pip index versions resutil, December 2026).
PYPI_RELEASES = [
    "0.1.0", "0.1.1", "0.1.2", "0.1.3", "0.1.4", "0.1.5", "0.1.6", "0.1.7", "0.1.8", "0.1.9",
    "0.1.10", "0.1.11", "0.1.11.1", "0.1.12", "0.1.12.1", "0.1.13", "0.1.14", "0.1.15",
    "0.1.16", "0.1.17", "0.1.17.1", "0.1.18", "0.1.19", "0.1.20", "0.2.0", "0.2.1", "0.2.2",
]

# resutil 0.1.20's sample.py, as its users wrote scripts: ex_dir is a str.
SCRIPT_0_1_20 = """
    import json
    import os
    from os import makedirs
    from os.path import join
    import argparse

    import yaml
    import resutil


    @resutil.main(verbose=False)
    def main_func(params):
        print("----Results can be stored in ", params.ex_dir)
        parser = argparse.ArgumentParser("sample")
        parser.add_argument("--test_arg", type=str, help="test")
        parsed_args, unknown = parser.parse_known_args()

        with open(join(params.ex_dir, "test.txt"), "w") as f:
            f.write("Hello World")
        subdir = join(params.ex_dir, "subdir")
        makedirs(subdir, exist_ok=True)
        with open(join(subdir, "subfile.txt"), "w") as f:
            f.write("Hello World!!!")
        with open(params.ex_dir + "/plus.txt", "w") as f:
            f.write(os.path.basename(params.ex_dir))
        with open(f"{params.ex_dir}/fstring.txt", "w") as f:
            f.write("%s" % params.ex_dir)
        assert os.path.isdir(params.ex_dir) and os.path.exists(os.path.join(params.ex_dir, "test.txt"))
        assert params.ex_dir.endswith(os.path.basename(params.ex_dir))
        with open(join(params.ex_dir, "config.json"), "w") as f:
            json.dump({"out": params.ex_dir, "arg": parsed_args.test_arg}, f)
        with open(join(params.ex_dir, "config.yaml"), "w") as f:
            yaml.safe_dump({"out": params.ex_dir}, f)
        params.save_checkpoint()


    if __name__ == "__main__":
        main_func()
"""

# A 0.2.2 user's script: the same str, plus the Path use this resutil's README shows.
SCRIPT_0_2_2 = """
    import os
    import shutil
    from pathlib import Path

    import resutil


    @resutil.main(True)
    def main(params):
        out = params.ex_dir
        (out / "path.txt").write_text(out.name)
        (out / "nested").mkdir()
        (out / "nested" / "x.txt").write_text("x")
        shutil.copy(out / "path.txt", os.path.join(out, "copy.txt"))
        assert out == Path(str(out)) and out == str(out)
        assert Path(out).is_dir() and os.fspath(out) == str(out)
        assert sorted(p.name for p in out.glob("*.txt")) == ["copy.txt", "path.txt"]
        assert out.parent.name == "results" and out.path.is_absolute()
        print("ex_dir=" + out)


    if __name__ == "__main__":
        main()
"""


def test_a_0_1_20_script_runs_unchanged(proj):
    write_script(proj, SCRIPT_0_1_20)
    r = run_script(proj, "s.py", ["--test_arg", "a"], env={"RESUTIL_COMMENT": "old-style"})
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    assert (folder / "test.txt").read_text() == "Hello World"
    assert (folder / "subdir" / "subfile.txt").read_text() == "Hello World!!!"
    assert (folder / "plus.txt").read_text() == folder.name
    assert (folder / "fstring.txt").read_text() == str(folder)
    assert json.loads((folder / "config.json").read_text()) == {"out": str(folder), "arg": "a"}
    assert yaml.safe_load((folder / "config.yaml").read_text()) == {"out": str(folder)}
    # verbose=False: resutil says nothing of what went well...
    assert r.stderr == "", r.stderr
    # ...and still does it: recorded, pushed with every file.
    assert read_exp(folder)["status"] == "finished"
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "finished"


def test_a_0_2_2_script_runs_unchanged(proj):
    write_script(proj, SCRIPT_0_2_2)
    r = run_script(proj, env={"RESUTIL_COMMENT": "new-style"})
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    assert f"ex_dir={folder}" in r.stdout
    assert (folder / "path.txt").read_text() == folder.name
    assert (folder / "copy.txt").read_text() == folder.name
    assert "Pushed" in r.stderr  # verbose=True (positionally, as 0.1.x's main(verbose))


def test_add_takes_several_upstream_experiments_after_one_d(proj):
    a = make_exp(proj, "a")
    b = make_exp(proj, "b")
    c = make_exp(proj, "c")
    for args in (["x", "-d", a.name, b.name, c.name],      # 0.1.x: -d A B C
                 ["y", "-d", a.name, "-d", b.name, c.name],
                 ["-d", a.name, b.name],                     # no comment, as 0.1.x allowed
                 ["z", f"--dependency={a.name}", b.name]):
        folder = ok("add", *args).stdout.strip()
        deps = read_exp(proj.results / folder.split("/")[-1])["dependency"]
        want = {"x": [a, b, c], "y": [a, b, c], "z": [a, b]}.get(folder[-1], [a, b])
        assert deps == [e.name for e in want], (args, deps)


def test_the_version_sorts_above_every_pypi_release_and_the_readme_says_why():
    r = ok("--version")
    version = Version(re.search(r"version (\S+)", r.stdout).group(1))
    assert all(version > Version(v) for v in PYPI_RELEASES), version
    readme = (REPO / "README.md").read_text()
    assert "0.2.2" in readme and str(version) in readme


def test_0_2_x_storage_variables_override_the_config_file(proj, monkeypatch):
    conf = proj.root / "resutil-conf.yaml"
    before = conf.read_text()
    monkeypatch.setenv("RESUTIL_STORAGE_TYPE", "gcs")
    monkeypatch.setenv("RESUTIL_GCS_BUCKET_NAME", "from-env")
    monkeypatch.setenv("RESUTIL_GCS_KEY_FILE_PATH", "k.json")
    config = load_config(conf)
    assert config.storage_type == "gcs"
    assert config.storage_config["bucket_name"] == "from-env"
    assert config.storage_config["key_file_path"] == "k.json"
    assert config.overrides == {"storage_type": "RESUTIL_STORAGE_TYPE",
                                "storage_config.bucket_name": "RESUTIL_GCS_BUCKET_NAME",
                                "storage_config.key_file_path": "RESUTIL_GCS_KEY_FILE_PATH"}
    assert config.raw["storage_type"] == "local"  # what a save would write: the file's
    assert conf.read_text() == before
    # The gcs variables mean nothing to another storage type.
    monkeypatch.delenv("RESUTIL_STORAGE_TYPE")
    assert load_config(conf).storage_config == {"path": str(proj.remote)}

    monkeypatch.setenv("RESUTIL_STORAGE_TYPE", "ftp")
    r = run_cli("list")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "RESUTIL_STORAGE_TYPE=ftp", "local, gcs")


def test_0_2_x_bucket_variable_sends_pushes_to_that_bucket(tmp_path, gcs_settings, gcs_admin,
                                                         gcs_bucket, monkeypatch):
    conf_values = {**gcs_settings.values, "bucket_name": "not-this-one"}
    proj = make_project(tmp_path, type(gcs_settings)(values=gcs_settings.values,
                                                     storage_type="gcs"))
    conf = proj.root / "resutil-conf.yaml"
    data = yaml.safe_load(conf.read_text())
    data["storage_config"] = conf_values
    conf.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(proj.root)
    monkeypatch.setenv("RESUTIL_GCS_BUCKET_NAME", gcs_bucket)
    exp = make_exp(proj, "to-env-bucket")
    ok("push", exp.name)
    names = [b.name for b in gcs_admin.list_blobs(gcs_bucket)]
    assert f"Proj/{exp.name}.zip" in names


def test_flags_win_over_variables_and_variables_over_init_defaults(tmp_path, monkeypatch):
    here = tmp_path / "p"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("RESUTIL_STORAGE_TYPE", "gcs")
    r = ok("init", "--storage", "local", "--path", str(tmp_path / "nas"), "--yes")
    assert "RESUTIL_STORAGE_TYPE" not in r.stderr
    assert yaml.safe_load((here / "resutil-conf.yaml").read_text())["storage_type"] == "local"
    monkeypatch.setenv("RESUTIL_STORAGE_TYPE", "server")
    r = run_cli("init", "--force", "--yes")
    assert r.exit_code == 1
    said, error = r.stderr.splitlines()
    assert said == "storage type: server (from RESUTIL_STORAGE_TYPE)"
    assert_one_error_line(error, "server", "not supported", "gcs")


def test_storage_type_server_is_one_line_saying_what_to_use(tmp_path, monkeypatch):
    (tmp_path / "resutil-conf.yaml").write_text(
        "project_name: P\nresults_dir: results\nstorage_type: server\nstorage_config:\n"
        "  server_url: https://resutil-server.example\n  bucket_name: team-results\n")
    monkeypatch.chdir(tmp_path)
    for args in (["list"], ["push"], ["pull", "x"]):
        r = run_cli(*args)
        assert r.exit_code == 1
        assert_one_error_line(r.stderr, "storage_type 'server'", "not supported",
                              "storage_type: gcs", "team-results")


@pytest.mark.parametrize("var", ["RESUTIL_NO_REMOTE", "RESUTIIL_REMOTE"])
def test_0_2_x_spellings_of_no_remote_keep_a_run_local(proj, var):
    write_script(proj, """
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "r.txt").write_text("1")

        main()
    """)
    r = run_script(proj, env={var: "1"})
    assert r.returncode == 0, r.stderr
    assert proj.remote_zips() == []


def test_package_imports_no_cloud_sdk_and_no_yaml_representer_leaks():
    """ExDir registers a YAML representer for itself only; plain str dumps as before."""
    code = ("import yaml, resutil.decorator as d, sys; "
            "print(yaml.safe_dump({'a': d.ExDir('/x'), 'b': 'y'}).strip()); "
            "print(any(m.startswith(('google.', 'box_sdk_gen', 'pydrive2')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.splitlines()
    assert out == ["a: /x", "b: y", "False"]
