"""``@resutil.main()`` and ``resutil.experiment()``, run as a user runs them: real scripts in
a real subprocess, in a project made by ``resutil init``, with stdin not a terminal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import xxhash
import yaml

from .helpers import (
    NAME_RE,
    assert_one_error_line,
    git,
    make_exp,
    make_project,
    popen_script,
    read_exp,
    read_exp_in_zip,
    run_cli,
    run_script,
    wait_for,
    write_script,
)

BASIC = """
    import sys
    from pathlib import Path
    import resutil

    @resutil.main()
    def main(params):
        assert isinstance(params.ex_dir, str) and params.ex_dir.path.is_absolute()
        assert params.ex_dir.is_dir()
        print("ex_name=" + params.ex_name)
        print("to stdout")
        print("to stderr", file=sys.stderr)
        (params.ex_dir / "result.csv").write_text("a,b\\n1,2\\n" * 100)
        (params.ex_dir / "sub").mkdir()
        (params.ex_dir / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 8)

    if __name__ == "__main__":
        main()
"""


def test_run_creates_pushed_self_describing_folder(proj):
    write_script(proj, BASIC)
    r = run_script(proj, "s.py", ["--lr", "0.1"], env={"RESUTIL_COMMENT": "first [try]"})
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    assert NAME_RE.match(folder.name) and folder.name.endswith("_first [try]")
    assert f"ex_name={folder.name}" in r.stdout
    assert f"Experiment {folder.name}" in r.stderr  # shown literally, not as markup

    # Output is shown and saved.
    assert "to stdout" in r.stdout and "to stderr" in r.stderr
    assert "to stdout" in (folder / "resutil-stdout.log").read_text()
    assert "to stderr" in (folder / "resutil-stderr.log").read_text()
    assert "to stderr" not in (folder / "resutil-stdout.log").read_text()

    meta = read_exp(folder)
    # 0.1.x keys, as they were.
    assert meta["args"].endswith("s.py --lr 0.1")
    assert meta["result_dir"] == f"results/{folder.name}"
    assert meta["dependency"] == []
    assert set(meta["git"]) == {"commit_hash", "uncommited_files"}
    # New keys.
    assert meta["status"] == "finished"
    assert meta["comment"] == "first [try]"
    assert meta["started_at"] and meta["ended_at"] and meta["started_at"] <= meta["ended_at"]
    env = meta["environment"]
    assert env["python"].count(".") == 2 and env["platform"] and env["host"]
    assert "PyYAML" in env["packages"] or "pyyaml" in {k.lower() for k in env["packages"]}
    assert meta["dependency_sources"] == []

    # The manifest lists every file with its size and content hash.
    files = meta["manifest"]["files"]
    on_disk = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*") if p.is_file() and p.name != "resutil-exp.yaml"
    }
    assert set(files) == set(on_disk) >= {"result.csv", "sub/blob.bin", "resutil-stdout.log",
                                          "resutil-stderr.log"}
    for rel, (size, digest) in files.items():
        data = on_disk[rel].read_bytes()
        assert size == len(data)
        assert digest == xxhash.xxh3_128(data).hexdigest()

    # Pushed: one zip in the 0.1.x place, holding the same metadata.
    assert proj.remote_zips() == [f"{folder.name}.zip"]
    inside = read_exp_in_zip(proj.zip_of(folder.name))
    assert inside["status"] == "finished"
    assert inside["manifest"]["files"] == files


def test_git_commit_and_uncommitted_files_but_never_the_key_file(tmp_path):
    proj = make_project(tmp_path, git=True)
    conf = proj.root / "resutil-conf.yaml"
    data = yaml.safe_load(conf.read_text())
    data["storage_config"]["key_file_path"] = "key.json"
    conf.write_text(yaml.safe_dump(data))
    write_script(proj, BASIC)
    (proj.root / "lib.py").write_text("X = 1\n")
    (proj.root / "staged.py").write_text("Y = 1\n")
    (proj.root / "key.json").write_text('{"secret": "v1"}')
    (proj.root / "clean.py").write_text("Z = 1\n")
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-q", "-m", "initial")
    head = git(proj.root, "rev-parse", "HEAD").strip()
    (proj.root / "lib.py").write_text("X = 2  # modified, not staged\n")
    (proj.root / "staged.py").write_text("Y = 2  # staged\n")
    git(proj.root, "add", "staged.py")
    (proj.root / "key.json").write_text('{"secret": "v2"}')  # tracked AND modified
    (proj.root / "untracked.py").write_text("new\n")

    r = run_script(proj, "s.py")
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    meta = read_exp(folder)
    assert meta["git"]["commit_hash"] == head
    assert sorted(meta["git"]["uncommited_files"]) == ["lib.py", "staged.py"]
    copied = folder / "uncommited_files"
    assert (copied / "lib.py").read_text() == "X = 2  # modified, not staged\n"
    assert (copied / "staged.py").read_text() == "Y = 2  # staged\n"
    assert not (copied / "key.json").exists()
    assert not (copied / "untracked.py").exists() and not (copied / "clean.py").exists()
    with zipfile.ZipFile(proj.zip_of(folder.name)) as zf:
        names = zf.namelist()
        assert "uncommited_files/lib.py" in names
        assert not any("key.json" in n for n in names)
        assert all(b"secret" not in zf.read(n) for n in names)


def test_a_project_without_git_works(proj):
    write_script(proj, BASIC)
    r = run_script(proj, env={"GIT_CEILING_DIRECTORIES": str(proj.root.parent)})
    assert r.returncode == 0, r.stderr
    meta = read_exp(proj.only_exp())
    assert meta["git"] == {"commit_hash": None, "uncommited_files": []}
    assert not (proj.only_exp() / "uncommited_files").exists()


UPSTREAM = """
    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "x.csv").write_text("upstream data\\n")

    if __name__ == "__main__":
        main()
"""

READS_ARGV = """
    import sys
    import resutil

    @resutil.main()
    def main(params):
        data = open(sys.argv[1]).read()
        (params.ex_dir / "copy.csv").write_text(data)
        print("read:", data.strip())

    if __name__ == "__main__":
        main()
"""

READS_UNNAMED = """
    from pathlib import Path
    import resutil

    @resutil.main()
    def main(params):
        ups = [p for p in Path("results").iterdir() if p.name.endswith("_up")]
        # The upstream's name is nowhere in argv: only the read reveals it.
        data = (ups[0] / "x.csv").read_text()
        (params.ex_dir / "copy.csv").write_text(data)

    if __name__ == "__main__":
        main()
"""


def _run(proj, body: str, args=(), comment: str = "down"
         ) -> tuple[subprocess.CompletedProcess, Path]:
    """``body`` run as a script with that comment, which must succeed; its output and its
    experiment folder."""
    write_script(proj, body)
    r = run_script(proj, "s.py", args, env={"RESUTIL_COMMENT": comment})
    assert r.returncode == 0, r.stderr
    return r, proj.exp(comment)


def test_dependency_from_argv(proj):
    _, up = _run(proj, UPSTREAM, comment="up")
    up_digest = read_exp(up)["manifest"]["digest"]
    _, down = _run(proj, READS_ARGV, [f"results/{up.name}/x.csv"])
    meta = read_exp(down)
    assert meta["dependency"] == [up.name]
    assert meta["dependency_sources"] == [
        {"name": up.name, "source": "argv", "manifest": up_digest,
         "run_id": read_exp(up)["run_id"]}
    ]


def test_dependency_from_an_observed_read(proj):
    _, up = _run(proj, UPSTREAM, comment="up")
    _, down = _run(proj, READS_UNNAMED)
    meta = read_exp(down)
    assert meta["dependency"] == [up.name]
    assert meta["dependency_sources"][0]["source"] == "observed"
    # Writing its own files is not a dependency on itself.
    assert all(s["name"] != down.name for s in meta["dependency_sources"])


def test_declared_upstream_by_prefix(proj):
    _, up = _run(proj, UPSTREAM, comment="up")
    _, down = _run(proj, f"""
        import resutil

        @resutil.main()
        def main(params):
            folder = params.upstream("{up.name[:22]}")
            (params.ex_dir / "copy.csv").write_text((folder / "x.csv").read_text())

        if __name__ == "__main__":
            main()
    """)
    meta = read_exp(down)
    assert meta["dependency"] == [up.name]
    assert meta["dependency_sources"][0]["source"] == "declared"


def test_missing_upstream_named_in_argv_is_pulled_before_the_run(proj):
    # Made yesterday on another machine: on the remote, not here.
    up = make_exp(proj, "up", {"x.csv": "upstream data\n"}, when=datetime.now() - timedelta(days=1))
    assert run_cli("push", up.name).exit_code == 0
    shutil.rmtree(up)
    r, down = _run(proj, READS_ARGV, [f"results/{up.name}/x.csv"])
    assert "read: upstream data" in r.stdout
    assert (up / "x.csv").read_text() == "upstream data\n"
    assert read_exp(down)["dependency"] == [up.name]


def test_missing_upstream_nowhere_fails_without_leaving_a_folder(proj):
    write_script(proj, READS_ARGV)
    ghost = "aaaaaa_20240101T000000_ghost"
    r = run_script(proj, "s.py", [f"results/{ghost}/x.csv"])
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error:")
    assert "aaaaaa_20240101T000000" in r.stderr.strip().splitlines()[-1]
    assert proj.exp_dirs() == []
    assert proj.remote_zips() == []


def test_no_remote_keeps_it_local(proj):
    write_script(proj, BASIC)
    r = run_script(proj, env={"RESUTIL_NO_REMOTE": "1"})
    assert r.returncode == 0, r.stderr
    meta = read_exp(proj.only_exp())
    assert meta["status"] == "finished"
    assert meta["manifest"]["count"] == len(meta["manifest"]["files"]) > 0
    assert proj.remote_zips() == []


def test_debug_uses_scratch_folder_and_pushes_nothing(proj):
    write_script(proj, BASIC)
    for _ in range(2):  # the scratch folder is reused
        r = run_script(proj, env={"RESUTIL_DEBUG": "1", "RESUTIL_COMMENT": "ignored"})
        assert r.returncode == 0, r.stderr
    assert (proj.results / "_debug" / "result.csv").exists()
    assert "ex_name=_debug" in r.stdout
    assert proj.exp_dirs() == []
    assert proj.remote_zips() == []
    assert not proj.sidecar_dir.exists() or list(proj.sidecar_dir.iterdir()) == []


FAILS = """
    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "partial.txt").write_text("half done\\n")
        raise ValueError("boom in user code")

    if __name__ == "__main__":
        main()
"""


def test_exception_marks_failed_keeps_and_pushes(proj):
    write_script(proj, FAILS)
    # Not even RESUTIL_NO_INTERACTIVE: without a TTY nothing may prompt.
    env = {k: v for k, v in os.environ.items() if k != "RESUTIL_NO_INTERACTIVE"}
    r = subprocess.run(
        [os.sys.executable, "s.py"], cwd=proj.root, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "ValueError: boom in user code" in r.stderr  # the user's traceback is shown
    folder = proj.only_exp()
    assert (folder / "partial.txt").exists()
    assert read_exp(folder)["status"] == "failed"
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "failed"


def test_keyboard_interrupt_marks_interrupted(proj):
    ready = proj.root / "ready"
    write_script(proj, f"""
        import time
        from pathlib import Path
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "partial.txt").write_text("x")
            Path({str(ready)!r}).touch()
            while True:
                time.sleep(0.05)

        if __name__ == "__main__":
            main()
    """)
    p = popen_script(proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(ready.exists, "the run to start", p)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    folder = proj.only_exp()
    assert read_exp(folder)["status"] == "interrupted"
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "interrupted"


def test_checkpoint_uploads_while_running(proj):
    marker = proj.root / "checkpointed"
    go = proj.root / "go"
    write_script(proj, f"""
        import time
        from pathlib import Path
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "epoch1.txt").write_text("loss 0.5\\n")
            params.save_checkpoint()
            Path({str(marker)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.02)
            (params.ex_dir / "epoch2.txt").write_text("loss 0.2\\n")

        if __name__ == "__main__":
            main()
    """)
    p = popen_script(proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(marker.exists, "the checkpoint", p)
        folder = proj.only_exp()
        zpath = proj.zip_of(folder.name)
        assert zpath.exists()
        mid = read_exp_in_zip(zpath)
        assert mid["status"] == "running"
        with zipfile.ZipFile(zpath) as zf:
            assert "epoch1.txt" in zf.namelist() and "epoch2.txt" not in zf.namelist()
        go.touch()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    end = read_exp_in_zip(zpath)
    assert end["status"] == "finished"
    assert {"epoch1.txt", "epoch2.txt"} <= set(end["manifest"]["files"])
    assert proj.remote_zips() == [zpath.name]


def test_with_block(proj):
    write_script(proj, """
        import resutil

        with resutil.experiment("nb") as ex:
            (ex.ex_dir / "r.txt").write_text("42")
            print("inside", ex.ex_name)
    """)
    r = run_script(proj)
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    assert folder.name.endswith("_nb")
    assert f"inside {folder.name}" in r.stdout
    assert read_exp(folder)["status"] == "finished"
    assert proj.remote_zips() == [f"{folder.name}.zip"]


def test_bare_decorator_and_no_comment_without_a_tty(proj):
    write_script(proj, """
        import resutil

        @resutil.main
        def main(params):
            (params.ex_dir / "r.txt").write_text("42")

        main()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RESUTIL_NO_INTERACTIVE"}
    r = subprocess.run(
        [os.sys.executable, "s.py"], cwd=proj.root, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    assert len(folder.name) == 22  # no comment asked, none used


@pytest.mark.slow
def test_concurrent_runs_get_distinct_folders(proj):
    go = proj.root / "go"
    n = 4
    write_script(proj, f"""
        import sys, time
        from pathlib import Path
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "who.txt").write_text(sys.argv[1])

        if __name__ == "__main__":
            Path("ready-" + sys.argv[1]).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.005)
            main()
    """)
    env = {"RESUTIL_COMMENT": "same", "RESUTIL_NO_REMOTE": "1"}
    procs = [popen_script(proj, "s.py", [str(i)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) for i in range(n)]
    try:
        wait_for(lambda: all((proj.root / f"ready-{i}").exists() for i in range(n)), "all ready")
        go.touch()
        for p in procs:
            p.communicate(timeout=60)
            assert p.returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    dirs = proj.exp_dirs()
    assert len(dirs) == n
    assert len({d.name[:22] for d in dirs}) == n
    assert sorted((d / "who.txt").read_text() for d in dirs) == [str(i) for i in range(n)]


@pytest.mark.parametrize("comment", ["a/b", "x" * 201, "what?"])
def test_invalid_comment_is_one_line_and_creates_nothing(proj, comment):
    write_script(proj, BASIC)
    r = run_script(proj, env={"RESUTIL_COMMENT": comment})
    assert r.returncode == 1
    assert_one_error_line(r.stderr, "invalid comment")
    assert proj.exp_dirs() == []
    assert "to stdout" not in r.stdout  # the function never ran
