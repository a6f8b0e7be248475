"""`resutil reproduce` and `resutil diff` (issue 12): real git repositories made by the test,
real scripts in subprocesses, the CLI through its entry point, the example pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from resutil.metadata import read_meta
from resutil.storage.local import LocalStorage

from .helpers import (
    REPO,
    Proj,
    assert_one_error_line,
    cli_ok,
    git,
    make_exp,
    make_project,
    meta_01x,
    read_exp,
    run_cli,
    run_script,
    write_script,
)

# Reads a CSV of numbers (argv[1]), writes each doubled (times lib.FACTOR) and their sum.
DOUBLE = """\
    import json, sys
    import resutil
    import lib

    @resutil.main()
    def main(params):
        nums = [float(x) for x in open(sys.argv[1]).read().split()]
        out = [x * lib.FACTOR for x in nums]
        (params.ex_dir / "out.txt").write_text("\\n".join(map(str, out)) + "\\n")
        (params.ex_dir / "metrics.json").write_text(json.dumps({"sum": sum(out)}))

    if __name__ == "__main__":
        main()
"""


def cli(proj: Proj, *args: str, code: int = 0):
    """``resutil ARGS`` in ``proj``: exit code ``code`` (0 via cli_ok); the whole result."""
    if code == 0:
        return cli_ok(*args, cwd=proj.root)
    r = run_cli(*args, cwd=proj.root)
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    return r


def commit(proj: Proj, message: str) -> str:
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-qm", message)
    return git(proj.root, "rev-parse", "HEAD").strip()


def git_project(tmp_path: Path) -> Proj:
    proj = make_project(tmp_path, git=True)
    commit(proj, "resutil-conf.yaml")
    return proj


def clone(proj: Proj, base: Path) -> Proj:
    """A fresh clone of the project's repository (same storage, nothing local)."""
    subprocess.run(["git", "clone", "-q", str(proj.root), str(base)], check=True)
    return Proj(base, proj.remote, proj.name)


def work_tree_state(proj: Proj) -> tuple[str, ...]:
    """What a user sees of their work tree: status, HEAD, branch, work trees, file contents."""
    files = tuple(f"{p.relative_to(proj.root)}={p.read_bytes()!r}"
                  for p in sorted(proj.root.glob("*.py")) + sorted(proj.root.glob("*.txt")))
    return (git(proj.root, "status", "--porcelain"), git(proj.root, "rev-parse", "HEAD"),
            git(proj.root, "branch", "--show-current"),
            git(proj.root, "worktree", "list", "--porcelain").count("worktree "), *files)


# -- 1. arguments with spaces; whole names ---------------------------------------------------------
def test_arguments_are_recorded_as_a_list_and_names_with_spaces_stay_whole(tmp_path):
    proj = git_project(tmp_path)
    raw = make_exp(proj, "raw data v1", files={"data.csv": "1\n2\n3\n"})
    cli(proj, "push", raw.name)
    write_script(proj, DOUBLE)
    (proj.root / "lib.py").write_text("FACTOR = 2\n")
    commit(proj, "double")
    arg = f"results/{raw.name}/data.csv"
    r = run_script(proj, "s.py", [arg], env={"RESUTIL_COMMENT": "double"})
    assert r.returncode == 0, r.stderr
    exp = proj.exp("double")
    meta = read_exp(exp)
    assert meta["argv"] == ["s.py", arg]
    assert meta["args"] == f"s.py {arg}"  # 0.1.x's string, as 0.1.x wrote it
    assert meta["dependency"] == [raw.name] and " v1" in raw.name
    assert read_meta(exp).dependencies[0].name == raw.name
    side = json.loads(proj.sidecar(exp.name).read_text())
    assert side["meta"]["dependency"] == [raw.name]
    assert cli(proj, "show", exp.name, "--json").stdout.count(raw.name) >= 1
    shown = json.loads(cli(proj, "show", exp.name, "--json").stdout)
    assert shown["upstream"] == [{"name": raw.name, "source": "argv"}]

    r = cli(proj, "reproduce", exp.name)
    new = proj.exp("double-repro")
    assert read_exp(new)["argv"] == ["s.py", arg]
    assert "identical  out.txt" in r.stdout and "identical  metrics.json" in r.stdout
    assert "Reproduced" in r.stderr


def test_a_01x_dependency_entry_with_a_space_reads_whole(proj):
    raw = make_exp(proj, "raw data v1")
    exp = make_exp(proj, "uses")
    (exp / "resutil-exp.yaml").write_text(meta_01x(exp.name, deps=[raw.name]))
    shown = json.loads(cli(proj, "show", exp.name, "--json").stdout)
    assert [u["name"] for u in shown["upstream"]] == [raw.name]


# -- 2 and 3. a relabelled upstream; the recorded commit, the work tree untouched ------------------
def test_reproduce_runs_the_recorded_commit_with_its_uncommitted_files_and_relabelled_upstream(
        tmp_path):
    proj = git_project(tmp_path)
    raw = make_exp(proj, "raw data v1", files={"data.csv": "1\n2\n"})
    cli(proj, "push", raw.name)
    write_script(proj, DOUBLE)
    (proj.root / "lib.py").write_text("FACTOR = 2\n")
    first = commit(proj, "double")
    (proj.root / "lib.py").write_text("FACTOR = 3\n")  # the run uses an uncommitted change
    r = run_script(proj, "s.py", [f"results/{raw.name}/data.csv"], env={"RESUTIL_COMMENT": "x3"})
    assert r.returncode == 0, r.stderr
    orig = proj.exp("x3")
    assert read_exp(orig)["git"]["uncommited_files"] == ["lib.py"]
    assert (orig / "out.txt").read_text() == "3.0\n6.0\n"
    # HEAD moves on, the work tree gets dirty, the upstream is relabelled.
    (proj.root / "lib.py").write_text("FACTOR = 5\n")
    commit(proj, "factor 5")
    (proj.root / "lib.py").write_text("FACTOR = 7  # dirty\n")
    (proj.root / "notes.txt").write_text("untracked notes\n")
    relabelled = cli(proj, "comment", raw.name, "raw-v2-final").stderr.split()[-1]
    before = work_tree_state(proj)

    r = cli(proj, "reproduce", orig.name, "--dry-run")
    assert f"commit {first[:10]} in a temporary git worktree" in r.stdout
    assert "1 uncommitted file(s) laid over it" in r.stdout
    assert f"{relabelled} (recorded as {raw.name})" in r.stdout
    assert f"results/{relabelled}/data.csv" in r.stdout
    assert not [d for d in proj.exp_dirs() if "repro" in d.name]

    r = cli(proj, "reproduce", orig.name)
    assert work_tree_state(proj) == before  # nothing of the user's work tree changed
    new = proj.exp("x3-repro")
    assert (new / "out.txt").read_text() == "3.0\n6.0\n"  # commit `first` + lib.py copy
    assert "identical  out.txt" in r.stdout and "Reproduced" in r.stderr
    meta = read_exp(new)
    assert meta["git"]["commit_hash"] == first and meta["git"]["uncommited_files"] == ["lib.py"]
    assert meta["reproduces"] == {"run_id": read_exp(orig)["run_id"], "name": orig.name}
    assert meta["dependency"] == [relabelled]
    assert f"{new.name}.zip" in proj.remote_zips()
    # and the two runs have the same code, files and numbers
    d = json.loads(cli(proj, "diff", orig.name, new.name, "--json").stdout)
    assert d["code"]["same"] and all(f["state"] == "same" for f in d["files"]
                                     if not f["path"].startswith("resutil-"))


def test_a_rerun_that_differs_exits_1_and_says_how(tmp_path):
    proj = git_project(tmp_path)
    write_script(proj, """\
        import os, time
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "same.txt").write_text("constant\\n")
            (params.ex_dir / "stamp.txt").write_text("line one\\n%d\\n" % time.time_ns())
            (params.ex_dir / f"pid-{os.getpid()}.txt").write_text("x")

        if __name__ == "__main__":
            main()
    """)
    commit(proj, "script")
    assert run_script(proj, "s.py", env={"RESUTIL_COMMENT": "vary"}).returncode == 0
    orig = proj.exp("vary")
    (gone,) = [p.name for p in orig.glob("pid-*")]
    r = cli(proj, "reproduce", orig.name, code=1)
    new = proj.exp("vary-repro")
    (extra,) = [p.name for p in new.glob("pid-*")]
    lines = r.stdout.splitlines()
    assert any(ln.startswith("identical  same.txt") for ln in lines)
    stamp = next(ln for ln in lines if ln.startswith("different  stamp.txt"))
    assert "bytes" in stamp and "->" in stamp  # sizes and hashes
    assert any(ln.strip().startswith("-") and ln.strip()[1:].isdigit() for ln in lines)  # diff
    assert any(ln.startswith(f"missing    {gone}") for ln in lines)
    assert any(ln.startswith(f"extra      {extra}") for ln in lines)
    assert_one_error_line(r.stderr, f"{new.name} does not reproduce {orig.name}",
                          "1 different, 1 missing, 1 extra")
    r = cli(proj, "reproduce", orig.name, "--ignore", "stamp.txt", "--ignore", "pid-*")
    assert "Reproduced" in r.stderr and "(ignored)" in r.stdout


def test_at_head_reruns_todays_code_in_place(tmp_path):
    proj = git_project(tmp_path)
    raw = make_exp(proj, "raw", files={"data.csv": "1\n"})
    write_script(proj, DOUBLE)
    (proj.root / "lib.py").write_text("FACTOR = 2\n")
    commit(proj, "one")
    assert run_script(proj, "s.py", [f"results/{raw.name}/data.csv"],
                      env={"RESUTIL_COMMENT": "x2"}).returncode == 0
    orig = proj.exp("x2")
    (proj.root / "lib.py").write_text("FACTOR = 4\n")
    commit(proj, "two")
    r = cli(proj, "reproduce", orig.name, "--at-head", code=1)
    assert "the work tree as it is" in r.stdout and "HEAD is" in r.stderr
    assert (proj.exp("x2-repro") / "out.txt").read_text() == "4.0\n"
    assert "different  out.txt" in r.stdout


def test_a_commit_missing_from_the_repository_is_one_error_line(tmp_path):
    proj = git_project(tmp_path)
    exp = make_exp(proj, "elsewhere")
    meta = read_meta(exp)
    meta.commit_hash = "0123456789abcdef0123456789abcdef01234567"
    meta.argv = ["s.py"]
    from resutil.metadata import write_meta

    write_meta(exp, meta)
    r = cli(proj, "reproduce", exp.name, code=1)
    assert_one_error_line(r.stderr, "commit 0123456789 of", "not in this repository",
                          "git fetch", "--at-head")


# -- 4. untracked code -----------------------------------------------------------------------------
def test_an_untracked_script_warns_is_copied_and_reproduces_from_a_fresh_clone(tmp_path):
    proj = git_project(tmp_path)
    (proj.root / ".gitignore").write_text("private_settings.py\n")
    commit(proj, "ignore")
    write_script(proj, """\
        import resutil
        import helper
        import private_settings

        @resutil.main()
        def main(params):
            (params.ex_dir / "answer.txt").write_text(str(helper.answer()))

        if __name__ == "__main__":
            main()
    """, "exp.py")
    (proj.root / "helper.py").write_text("def answer():\n    return 42\n")
    (proj.root / "private_settings.py").write_text("TOKEN = 'secret'\n")
    r = run_script(proj, "exp.py", env={"RESUTIL_COMMENT": "new"})
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1, r.stderr
    assert "exp.py, helper.py are not tracked by git" in warnings[0]
    assert "uncommited_files/" in warnings[0]
    exp = proj.exp("new")
    meta = read_exp(exp)
    assert meta["git"]["untracked_files"] == ["exp.py", "helper.py"]
    assert (exp / "uncommited_files" / "exp.py").read_text().startswith("import resutil")
    assert not (exp / "uncommited_files" / "private_settings.py").exists()  # git ignores it

    other = clone(proj, tmp_path / "clone")
    assert not (other.root / "exp.py").exists()
    (other.root / "private_settings.py").write_text("TOKEN = 'mine'\n")  # ignored: linked in
    r = cli(other, "reproduce", exp.name)
    new = other.exp("new-repro")
    assert (new / "answer.txt").read_text() == "42"
    assert read_exp(new)["git"]["untracked_files"] == ["exp.py", "helper.py"]
    assert "Reproduced" in r.stderr
    assert not (other.root / "exp.py").exists()  # the clone's work tree is untouched


def test_a_tracked_script_gives_no_warning(tmp_path):
    proj = git_project(tmp_path)
    write_script(proj, DOUBLE)
    (proj.root / "lib.py").write_text("FACTOR = 2\n")
    (proj.root / "d.csv").write_text("1\n")
    commit(proj, "all")
    r = run_script(proj, "s.py", ["d.csv"])
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
    assert "untracked_files" not in read_exp(proj.only_exp())["git"]


# -- the example pipeline: reproduce a step from a fresh clone; diff two runs ----------------------
EXAMPLE = ["data.py", "features.py", "train.py", "evaluate.py", "svg.py", "resutil-pipeline.yaml"]


@pytest.fixture
def example(tmp_path) -> Proj:
    pytest.importorskip("numpy")
    proj = make_project(tmp_path, git=True)
    for name in EXAMPLE:
        shutil.copy(REPO / "example_pipeline" / name, proj.root / name)
    commit(proj, "the example pipeline")
    cli(proj, "pipeline", "run")
    return proj


def test_the_example_evaluate_step_reproduces_bit_for_bit_from_a_fresh_clone(example, tmp_path):
    evaluate = example.exp("evaluate")
    other = clone(example, tmp_path / "fresh")
    r = cli(other, "reproduce", evaluate.name)
    new = other.exp("evaluate-repro")
    lines = r.stdout.splitlines()
    for name in ("metrics.json", "decision.svg"):
        assert any(ln.startswith(f"identical  {name}") for ln in lines), r.stdout
    assert not [ln for ln in lines if ln.startswith(("different", "missing", "extra"))
                and not ln.endswith("(ignored)")], r.stdout
    assert "Reproduced" in r.stderr
    assert (new / "metrics.json").read_bytes() == (evaluate / "metrics.json").read_bytes()
    assert {d.name for d in other.exp_dirs()} >= {example.exp(s).name
                                                  for s in ("data", "features", "train")}


def test_diff_of_two_example_runs_with_different_params(example, monkeypatch):
    first = {s: example.exp(s) for s in ("train", "evaluate")}
    spec = example.root / "resutil-pipeline.yaml"
    spec.write_text(spec.read_text().replace("epochs: 2000", "epochs: 50"))  # not committed
    cli(example, "pipeline", "run")
    second = {s: [d for d in example.exp_dirs() if d.name.endswith(f"_{s}")][-1]
              for s in ("train", "evaluate")}

    r = cli(example, "diff", first["train"].name, second["train"].name)
    out = r.stdout
    assert "params:" in out and "epochs  2000 -> 50" in out
    assert "environment: same" in out and "arguments: same" in out
    assert 'uncommitted  none -> ["resutil-pipeline.yaml"]' in out
    code = out.split("\ncode (")[1].split("\nfiles:")[0]
    assert "-    params: {epochs: 2000" in code and "+    params: {epochs: 50" in code
    assert "changed  model.npz" in out and "train.json" in out
    assert "epochs" in out.split("numbers:")[1]

    d = json.loads(cli(example, "diff", first["evaluate"].name, second["evaluate"].name,
                       "--json").stdout)
    ups = {u["key"]: u for u in d["upstream"]}
    assert ups["train"]["state"] == "changed" and ups["features"]["state"] == "same"
    (metrics,) = [f for f in d["numbers"] if f["path"] == "metrics.json"]
    acc = next(n for n in metrics["numbers"] if n["key"] == "accuracy")
    assert acc["a"] == json.loads((first["evaluate"] / "metrics.json").read_text())["accuracy"]
    assert acc["change"] == pytest.approx(acc["b"] - acc["a"])
    assert {f["path"]: f["state"] for f in d["files"]}["metrics.json"] == "changed"

    # Remote only: from the sidecars, with no download.
    fetched = _count_downloads(monkeypatch)
    cli(example, "rm", "-l", "--force", first["evaluate"].name, second["evaluate"].name)
    d = json.loads(cli(example, "diff", first["evaluate"].name, second["evaluate"].name,
                       "--json").stdout)
    assert {f["path"]: f["state"] for f in d["files"]}["metrics.json"] == "changed"
    assert d["a"]["where"] == "remote" and "pull" in d["numbers_note"]
    assert not [n for n in fetched if n.endswith(".zip")], fetched
    assert not [p for p in example.exp_dirs() if p.name.endswith("_evaluate")]


def _count_downloads(monkeypatch) -> list[str]:
    names: list[str] = []
    for method in ("fetched", "download", "download_to", "read_bytes"):
        original = getattr(LocalStorage, method)

        def counting(self, folder, name, *args, _original=original, **kwargs):
            names.append(name)
            return _original(self, folder, name, *args, **kwargs)

        monkeypatch.setattr(LocalStorage, method, counting)
    return names


def test_diff_shows_the_code_between_commits_and_uncommitted_files(tmp_path):
    proj = git_project(tmp_path)
    raw = make_exp(proj, "raw", files={"data.csv": "1\n"})
    write_script(proj, DOUBLE)
    (proj.root / "lib.py").write_text("FACTOR = 2\n")
    commit(proj, "one")
    arg = f"results/{raw.name}/data.csv"
    assert run_script(proj, "s.py", [arg], env={"RESUTIL_COMMENT": "a"}).returncode == 0
    (proj.root / "s.py").write_text((proj.root / "s.py").read_text().replace(
        '"sum"', '"total"'))
    commit(proj, "two")
    (proj.root / "lib.py").write_text("FACTOR = 10\n")  # uncommitted in run b
    assert run_script(proj, "s.py", [arg, "--extra"], env={"RESUTIL_COMMENT": "b"}).returncode == 0
    a, b = proj.exp("a"), proj.exp("b")
    out = cli(proj, "diff", a.name, b.name).stdout
    code = out.split("\ncode (")[1].split("\nfiles:")[0]
    assert "2 file(s) differ" in code
    assert '-    (params.ex_dir / "metrics.json").write_text(json.dumps({"sum": ' in code
    assert '+    (params.ex_dir / "metrics.json").write_text(json.dumps({"total": ' in code
    assert "-FACTOR = 2" in code and "+FACTOR = 10" in code
    assert "--extra  - -> (flag)" in out.split("arguments:")[1].split("\n\n")[0]
    assert "uncommitted  none -> [\"lib.py\"]" in out
    numbers = out.split("numbers:")[1]
    assert "sum" in numbers and "total" in numbers and "only in" in numbers


def test_diff_and_reproduce_have_help_with_an_example():
    for args in (["diff"], ["reproduce"]):
        r = run_cli(*args, "--help")
        assert r.exit_code == 0 and "Example:" in r.stdout, args
