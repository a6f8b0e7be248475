"""`resutil pipeline` and `resutil reproduce`: real subprocess steps on the local backend, in
projects made by `resutil init`, through the real CLI."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from resutil import decorator, pipeline
from resutil.metadata import read_meta

from .helpers import (
    Proj,
    assert_one_error_line,
    chdir,
    git,
    make_exp,
    make_project,
    read_exp,
    run_cli,
    run_script,
    write_script,
)

# A step script: writes OUT/out.txt = VALUE + the out.txt of each INPUT folder.
STEP_PY = """\
import pathlib, sys
out, value, inputs = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
text = value + "".join("<" + (pathlib.Path(p) / "out.txt").read_text() for p in inputs)
(out / "out.txt").write_text(text)
print("step wrote", text)
"""

# A step script using the decorator: it must adopt the runner's folder.
DECORATED_PY = """\
import argparse, pathlib
import resutil

@resutil.main()
def main(params):
    ap = argparse.ArgumentParser()
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--value")
    a = ap.parse_args()
    assert pathlib.Path(a.out).resolve() == params.ex_dir.resolve(), (a.out, params.ex_dir)
    prev = (pathlib.Path(a.input) / "out.txt").read_text() if a.input else ""
    (params.ex_dir / "out.txt").write_text(a.value + "<" + prev)
    print("decorated step done")

if __name__ == "__main__":
    main()
"""


def step(value: str, *needs: str, **params) -> dict:
    """A step running step.py; each need is a step of the same name."""
    run = "python step.py {out} " + value + "".join(f" {{needs.{n}}}" for n in needs)
    body: dict = {"run": run}
    if needs:
        body["needs"] = {n: n for n in needs}
    if params:
        body["params"] = params
    return body


def write_pipeline(proj: Proj, steps: dict) -> None:
    (proj.root / "step.py").write_text(STEP_PY)
    text = yaml.safe_dump({"steps": steps}, sort_keys=False)
    (proj.root / pipeline.PIPELINE_FILE).write_text(text)


def run(proj: Proj, *args: str, code: int = 0):
    with chdir(proj.root):
        r = run_cli(*args)
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    return r


def states(result) -> dict[str, tuple[str, str]]:
    """step -> (state, experiment) from the report `pipeline run` prints."""
    out = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("ran", "reused", "failed", "skipped"):
            out[parts[1]] = (parts[0], parts[2])
    return out


def kinds(got: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {s: state for s, (state, _) in got.items()}


def folders(proj: Proj, step_name: str) -> list:
    return [d for d in proj.exp_dirs() if d.name.endswith("_" + step_name)]


@pytest.fixture
def proj(tmp_path) -> Proj:
    return make_project(tmp_path)


CHAIN = {"a": step("A", n=1), "b": step("B", "a"), "c": step("C", "b"), "d": step("D")}


# -- runs, reuse, reruns -------------------------------------------------------------------------
def test_first_run_runs_every_step_the_second_reuses_all(proj):
    write_pipeline(proj, CHAIN)
    r = run(proj, "pipeline", "run")
    got = states(r)
    assert kinds(got) == dict.fromkeys("abcd", "ran")
    assert "4 ran, 0 reused, 0 failed, 0 skipped" in r.stdout
    c = proj.results / got["c"][1]
    assert (c / "out.txt").read_text() == "C<B<A"
    meta = read_exp(c)
    assert meta["status"] == "finished"
    assert meta["pipeline"]["step"] == "c" and len(meta["pipeline"]["fingerprint"]) == 32
    assert meta["dependency"] == [got["b"][1]]
    assert meta["dependency_sources"][0]["source"] == "declared"
    assert (c / pipeline.STEP_LOG).read_text().startswith("step wrote C<B<A")
    assert sorted(proj.remote_zips()) == sorted(f"{n}.zip" for _, n in got.values())

    before = sorted(d.name for d in proj.exp_dirs())
    r2 = run(proj, "pipeline", "run")
    assert states(r2) == {s: ("reused", n) for s, (_, n) in got.items()}
    assert "0 ran, 4 reused" in r2.stdout
    assert sorted(d.name for d in proj.exp_dirs()) == before


def test_changing_params_reruns_that_step_and_downstream_only(proj):
    write_pipeline(proj, CHAIN)
    first = states(run(proj, "pipeline", "run"))
    write_pipeline(proj, {**CHAIN, "b": step("B", "a", lr=0.1)})
    got = states(run(proj, "pipeline", "run"))
    assert kinds(got) == {"a": "reused", "b": "ran", "c": "ran", "d": "reused"}
    assert got["a"][1] == first["a"][1] and got["d"][1] == first["d"][1]
    assert read_exp(proj.results / got["c"][1])["dependency"] == [got["b"][1]]
    # Back to the old params: the first runs match again; nothing runs.
    write_pipeline(proj, CHAIN)
    again = states(run(proj, "pipeline", "run"))
    assert again == {s: ("reused", n) for s, (_, n) in first.items()}


def test_force_reruns_the_step_and_its_downstream(proj):
    write_pipeline(proj, CHAIN)
    run(proj, "pipeline", "run")
    got = states(run(proj, "pipeline", "run", "--force", "b"))
    assert kinds(got) == {"a": "reused", "b": "ran", "c": "ran", "d": "reused"}
    r = run(proj, "pipeline", "run", "--force", "nope", code=1)
    assert_one_error_line(r.stderr, "no step 'nope'")


def test_named_steps_run_with_their_upstream_only(proj):
    write_pipeline(proj, CHAIN)
    got = states(run(proj, "pipeline", "run", "b"))
    assert set(got) == {"a", "b"}
    assert not folders(proj, "c") and not folders(proj, "d")


def test_dry_run_shows_the_plan_and_changes_nothing(proj):
    write_pipeline(proj, CHAIN)
    r = run(proj, "pipeline", "run", "--dry-run")
    assert proj.exp_dirs() == []
    lines = dict((ln.split()[2], ln) for ln in r.stdout.splitlines())
    assert lines["a"].startswith("would run") and "never run" in lines["a"]
    run(proj, "pipeline", "run")
    write_pipeline(proj, {**CHAIN, "c": step("C", "b", x=2)})
    r = run(proj, "pipeline", "run", "-n")
    lines = dict((ln.split()[2], ln) for ln in r.stdout.splitlines())
    assert lines["b"].startswith("would reuse") and lines["c"].startswith("would run")
    assert "params.x unset -> 2" in lines["c"]


def test_a_failing_step_stops_its_descendants_only(proj):
    steps = {**CHAIN, "b": {"run": "python -c \"import sys; print('boom'); sys.exit(3)\"",
                            "needs": {"a": "a"}}}
    write_pipeline(proj, steps)
    r = run(proj, "pipeline", "run", code=1)
    got = states(r)
    assert kinds(got) == {"a": "ran", "b": "failed", "c": "skipped", "d": "ran"}
    assert "2 ran, 0 reused, 1 failed, 1 skipped" in r.stdout
    assert "upstream step b failed" in r.stdout
    assert "exit code 3" in r.stderr and "boom" in r.stderr  # the log's last lines
    (failed,) = folders(proj, "b")
    assert read_exp(failed)["status"] == "failed"
    assert (failed / pipeline.STEP_LOG).read_text() == "boom\n"
    assert not folders(proj, "c")
    # A failed run is never reused: the next run tries the step again.
    got = states(run(proj, "pipeline", "run", code=1))
    assert got["b"][0] == "failed" and got["a"][0] == "reused"


def test_jobs_run_independent_steps(proj):
    write_pipeline(proj, {"x": step("X"), "y": step("Y"), "z": step("Z", "x", "y")})
    got = states(run(proj, "pipeline", "run", "-j", "2"))
    assert kinds(got) == dict.fromkeys("xyz", "ran")
    assert (proj.results / got["z"][1] / "out.txt").read_text() == "Z<X<Y"


# -- remote ----------------------------------------------------------------------------------------
def test_an_up_to_date_step_only_on_the_remote_is_pulled_not_rerun(proj):
    write_pipeline(proj, CHAIN)
    first = states(run(proj, "pipeline", "run"))
    run(proj, "rm", "-l", first["c"][1], first["a"][1], "--force")
    got = states(run(proj, "pipeline", "run"))
    assert all(st == "reused" for st, _ in got.values())
    assert got == {s: ("reused", n) for s, (_, n) in first.items()}
    # An end result is pulled; an intermediate one nothing needed here stays on the remote.
    assert (proj.results / first["c"][1] / "out.txt").read_text() == "C<B<A"
    assert not (proj.results / first["a"][1]).exists()
    # When a step that runs needs it, it is pulled first.
    write_pipeline(proj, {**CHAIN, "b": step("B", "a", v=2)})
    got = states(run(proj, "pipeline", "run"))
    assert got["a"] == ("reused", first["a"][1]) and got["b"][0] == "ran"
    assert (proj.results / first["a"][1] / "out.txt").exists()


def test_without_a_remote_steps_stay_local_and_are_still_reused(proj, monkeypatch):
    monkeypatch.setenv("RESUTIL_NO_REMOTE", "1")
    write_pipeline(proj, CHAIN)
    got = states(run(proj, "pipeline", "run"))
    assert kinds(got) == dict.fromkeys("abcd", "ran")
    assert proj.remote_zips() == []
    assert read_meta(proj.results / got["c"][1]).manifest.files.keys() >= {"out.txt"}
    assert kinds(states(run(proj, "pipeline", "run"))) == dict.fromkeys("abcd", "reused")
    monkeypatch.delenv("RESUTIL_NO_REMOTE")
    got = states(run(proj, "pipeline", "run"))  # reused, and pushed now that there is a remote
    assert len(proj.remote_zips()) == 4 and kinds(got) == dict.fromkeys("abcd", "reused")


def test_needs_an_existing_experiment_only_on_the_remote(proj):
    raw = make_exp(proj, "raw-data", files={"out.txt": "RAW"})
    run(proj, "push", raw.name)
    run(proj, "rm", "-l", raw.name)
    write_pipeline(proj, {"f": {"run": "python step.py {out} F {needs.raw}",
                                "needs": {"raw": raw.name[:6]}}})
    got = states(run(proj, "pipeline", "run"))
    assert got["f"][0] == "ran"
    assert (proj.results / got["f"][1] / "out.txt").read_text() == "F<RAW"
    meta = read_meta(proj.results / got["f"][1])
    assert [(d.name, d.source) for d in meta.dependencies] == [(raw.name, "declared")]
    assert meta.pipeline["needs"] == {"raw": raw.name}


# -- the decorator inside a step -------------------------------------------------------------------
def test_a_decorated_step_adopts_the_runners_folder(proj):
    write_script(proj, DECORATED_PY, "dec.py")
    write_pipeline(proj, {"a": step("A"), "b": {
        "run": "python dec.py --input {needs.a} --out {out} --value {params.v}",
        "needs": {"a": "a"}, "params": {"v": "B"}}})
    got = states(run(proj, "pipeline", "run"))
    assert got["b"][0] == "ran"
    assert len(proj.exp_dirs()) == 2  # exactly one folder per step
    (b,) = folders(proj, "b")
    assert (b / "out.txt").read_text() == "B<A"
    meta = read_exp(b)
    assert meta["status"] == "finished"
    assert meta["pipeline"]["step"] == "b"  # the runner's record survives the decorator
    assert "dec.py" in meta["args"]
    assert [d["source"] for d in meta["dependency_sources"]] == ["declared"]
    assert "decorated step done" in (b / "resutil-stdout.log").read_text()
    assert states(run(proj, "pipeline", "run"))["b"][0] == "reused"


def test_the_adopt_variable_is_the_decorators():
    assert pipeline.ADOPT_ENV == decorator.ADOPT_ENV


# -- code ------------------------------------------------------------------------------------------
def test_editing_a_script_named_in_run_reruns_its_steps(proj):
    write_pipeline(proj, {"a": step("A"), "x": {"run": "python other.py {out}"}})
    (proj.root / "other.py").write_text("import sys; open(sys.argv[1] + '/o', 'w').write('1')\n")
    run(proj, "pipeline", "run")
    (proj.root / "other.py").write_text("import sys; open(sys.argv[1] + '/o', 'w').write('2')\n")
    r = run(proj, "pipeline", "status")
    assert "other.py changed" in r.stdout
    got = states(run(proj, "pipeline", "run"))
    assert got["x"][0] == "ran" and got["a"][0] == "reused"


def test_in_git_a_committed_params_change_reruns_only_that_step(tmp_path):
    proj = make_project(tmp_path, git=True)
    write_pipeline(proj, CHAIN)
    (proj.root / "step.py").write_text("import lib\n" + STEP_PY)
    (proj.root / "lib.py").write_text("X = 1\n")
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-qm", "one")
    run(proj, "pipeline", "run")
    write_pipeline(proj, {**CHAIN, "c": step("C", "b", k=1)})
    (proj.root / "step.py").write_text("import lib\n" + STEP_PY)
    git(proj.root, "commit", "-qam", "params")
    got = states(run(proj, "pipeline", "run"))
    assert kinds(got) == {"a": "reused", "b": "reused", "c": "ran", "d": "reused"}
    (proj.root / "lib.py").write_text("X = 2\n")  # every step's script imports it
    status = run(proj, "pipeline", "status").stdout.splitlines()
    assert len(status) == 4 and all(ln.startswith("stale") and "lib.py changed" in ln
                                    for ln in status), status
    got = states(run(proj, "pipeline", "run"))
    assert all(st == "ran" for st, _ in got.values())
    meta = read_exp(proj.results / got["a"][1])
    assert meta["git"]["uncommited_files"] == ["lib.py"]
    assert meta["pipeline"]["code"]["commit"] == git(proj.root, "rev-parse", "HEAD").strip()


def test_an_unrelated_commit_leaves_every_step_up_to_date(tmp_path):
    proj = make_project(tmp_path, git=True)
    write_pipeline(proj, CHAIN)
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-qm", "one")
    run(proj, "pipeline", "run")
    (proj.root / "NOTES.md").write_text("what I tried today\n")
    git(proj.root, "add", "NOTES.md")
    git(proj.root, "commit", "-qm", "notes")
    status = run(proj, "pipeline", "status").stdout.splitlines()
    assert len(status) == 4 and all(ln.startswith("up to date") for ln in status), status
    assert kinds(states(run(proj, "pipeline", "run"))) == dict.fromkeys("abcd", "reused")


def test_a_step_is_stale_only_for_the_modules_it_imports_and_its_deps(tmp_path):
    proj = make_project(tmp_path, git=True)
    (proj.root / "pkg").mkdir()
    (proj.root / "pkg" / "__init__.py").write_text("")
    (proj.root / "pkg" / "model.py").write_text("from . import layers\nSIZE = 1\n")
    (proj.root / "pkg" / "layers.py").write_text("N = 1\n")
    (proj.root / "conf").mkdir()
    (proj.root / "conf" / "train.yaml").write_text("lr: 1\n")
    (proj.root / "train.py").write_text("import sys\nfrom pkg import model\n"
                                        "open(sys.argv[1] + '/o', 'w').write('m')\n")
    write_pipeline(proj, {"a": step("A"), "t": {"run": "python train.py {out}",
                                                 "deps": ["conf/*.yaml"]}})
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-qm", "one")
    first = states(run(proj, "pipeline", "run"))
    files = read_exp(proj.results / first["t"][1])["pipeline"]["files"]
    assert set(files) == {"train.py", "pkg/__init__.py", "pkg/model.py", "pkg/layers.py",
                          "conf/train.yaml"}
    (proj.root / "pkg" / "layers.py").write_text("N = 2\n")  # imported by model, relatively
    lines = run(proj, "pipeline", "status").stdout.splitlines()
    assert lines[0].startswith("up to date  a")
    assert lines[1].split() == ["stale", "t", "pkg/layers.py", "changed"]
    git(proj.root, "commit", "-qam", "layers")
    run(proj, "pipeline", "run")
    (proj.root / "conf" / "train.yaml").write_text("lr: 2\n")
    (proj.root / "conf" / "new.yaml").write_text("x: 1\n")
    lines = run(proj, "pipeline", "status").stdout.splitlines()
    assert lines[1].split(None, 2)[2] == "conf/new.yaml added; conf/train.yaml changed"


def test_an_untracked_step_script_is_copied_with_a_warning(tmp_path):
    proj = make_project(tmp_path, git=True)
    write_pipeline(proj, {"a": step("A")})
    git(proj.root, "add", "resutil-pipeline.yaml")
    git(proj.root, "commit", "-qm", "pipeline only")
    r = run(proj, "pipeline", "run")
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "a: step.py not tracked by git" in warnings[0], r.stderr
    folder = proj.results / states(r)["a"][1]
    assert read_exp(folder)["git"]["untracked_files"] == ["step.py"]
    assert (folder / "uncommited_files" / "step.py").read_text() == STEP_PY


def test_a_step_recorded_by_an_earlier_resutil_says_so(proj):
    write_pipeline(proj, {"a": step("A")})
    first = states(run(proj, "pipeline", "run"))
    folder = proj.results / first["a"][1]
    meta = read_meta(folder)
    meta.pipeline = {**meta.pipeline, "fingerprint": "0" * 32}
    del meta.pipeline["format"]
    from resutil.metadata import write_meta

    write_meta(folder, meta)
    r = run(proj, "pipeline", "status")
    assert "recorded by an earlier resutil" in r.stdout


# -- status, graph, init ---------------------------------------------------------------------------
def test_status_says_what_is_up_to_date_stale_or_missing_and_why(proj):
    write_pipeline(proj, CHAIN)
    r = run(proj, "pipeline", "status")
    assert all(ln.startswith("missing") and "never run" in ln for ln in r.stdout.splitlines())
    first = states(run(proj, "pipeline", "run"))
    r = run(proj, "pipeline", "status")
    for s, (_, name) in first.items():
        assert f"up to date  {s}  {name} (local and remote)" in r.stdout
    write_pipeline(proj, {**CHAIN, "a": step("A", n=2)})
    lines = {ln.split()[1] if not ln.startswith("up") else ln.split()[3]: ln
             for ln in run(proj, "pipeline", "status").stdout.splitlines()}
    assert lines["a"].startswith("stale") and "params.n 1 -> 2" in lines["a"]
    assert lines["b"].startswith("stale") and "upstream step a will run" in lines["b"]
    assert lines["d"].startswith("up to date")


def test_graph_mermaid_and_dot(proj):
    raw = make_exp(proj, "raw")
    steps = {"a": {"run": "python step.py {out} A {needs.raw}", "needs": {"raw": raw.name}},
             "b": step("B", "a", lr=0.5)}
    write_pipeline(proj, steps)
    mermaid = run(proj, "pipeline", "graph", "-f", "mermaid").stdout
    assert mermaid.startswith("flowchart LR")
    assert '["a"]' in mermaid and '["b<br>lr=0.5"]' in mermaid and raw.name in mermaid
    assert mermaid.count("-->") == 2 and '|"raw"|' in mermaid
    dot = run(proj, "pipeline", "graph").stdout
    assert dot.startswith("digraph") and '"a" -> "b";' in dot
    data = json.loads(run(proj, "pipeline", "graph", "--format", "json").stdout)
    assert {n["id"] for n in data["nodes"]} == {"a", "b", f"experiment:{raw.name}"}


def test_init_writes_the_commented_template(proj):
    r = run(proj, "pipeline", "init")
    path = proj.root / pipeline.PIPELINE_FILE
    assert "Wrote" in r.stderr and path.read_text().startswith("# resutil-pipeline.yaml")
    loaded = pipeline.load_pipeline(path)
    assert list(loaded.steps) == ["data", "features", "train", "evaluate"]
    assert loaded.steps["train"].params == {"epochs": 5, "lr": 0.01}
    assert_one_error_line(run(proj, "pipeline", "init", code=1).stderr, "already exists")
    run(proj, "pipeline", "init", "--force")


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps, needle", [
    ({"a": step("A", "nope")}, "needs 'nope', which is neither a step"),
    ({"a": step("A", "b"), "b": step("B", "a")}, "cycle"),
    ({"a": {"run": "python step.py {out} {params.x}"}}, "unknown placeholder {params.x}"),
    ({"a": {"run": "echo {outt}"}}, "unknown placeholder {outt}"),
    ({"a": {"run": "echo {needs.raw}", "needs": {"raw": "zzzzzz_20200101T000000"}}},
     "not found locally or on the remote"),
    ({"a": {"command": "echo"}}, "unknown key 'command'"),
])
def test_pipeline_errors_are_one_line(proj, steps, needle):
    write_pipeline(proj, steps)
    r = run(proj, "pipeline", "run", code=1)
    assert_one_error_line(r.stderr, needle)
    assert proj.exp_dirs() == []


def test_a_missing_pipeline_file_is_one_line(proj):
    r = run(proj, "pipeline", "status", code=1)
    assert_one_error_line(r.stderr, "no resutil-pipeline.yaml", "pipeline init")


def test_placeholders_are_shell_quoted(tmp_path):
    cmd = pipeline.expand("x {out} {params.s} {params.n} {{lit}}", "st", tmp_path / "a b", {},
                          {"s": "it's", "n": [1, 2]}, tmp_path)
    assert cmd == "x 'a b' 'it'\"'\"'s' '[1, 2]' {lit}"


# -- reproduce -------------------------------------------------------------------------------------
def test_reproduce_a_pipeline_step(proj):
    write_pipeline(proj, CHAIN)
    first = states(run(proj, "pipeline", "run"))
    old = first["c"][1]
    r = run(proj, "reproduce", old, "--dry-run")
    assert old in r.stdout and "python step.py" in r.stdout and "'<new experiment>'" in r.stdout
    assert len(proj.exp_dirs()) == 4
    r = run(proj, "reproduce", old)
    (new,) = [d for d in proj.exp_dirs() if d.name.endswith("_c-repro")]
    assert f"{new.name}: finished" in r.stdout
    assert (new / "out.txt").read_text() == "C<B<A"
    assert "identical  out.txt" in r.stdout and "Reproduced" in r.stderr
    meta = read_exp(new)
    assert meta["reproduces"] == {"run_id": read_exp(proj.results / old)["run_id"], "name": old}
    assert meta["comment"] == "c-repro"
    assert meta["dependency"] == [first["b"][1]]
    assert f"{new.name}.zip" in proj.remote_zips()


def test_reproduce_a_script_run_pulls_upstream_and_runs_the_recorded_commit(tmp_path):
    proj = make_project(tmp_path, git=True)
    raw = make_exp(proj, "raw", files={"out.txt": "RAW"})
    write_script(proj, """\
        import sys
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "copy.txt").write_text(open(sys.argv[1] + "/out.txt").read())

        if __name__ == "__main__":
            main()
    """)
    run(proj, "push", raw.name)
    git(proj.root, "add", "s.py")
    git(proj.root, "commit", "-qm", "one")
    r = run_script(proj, "s.py", [f"results/{raw.name}"], env={"RESUTIL_COMMENT": "exp1"})
    assert r.returncode == 0, r.stderr
    (orig,) = [d for d in proj.exp_dirs() if d.name.endswith("_exp1")]
    (proj.root / "s.py").write_text((proj.root / "s.py").read_text() + "# changed\n")
    git(proj.root, "commit", "-qam", "two")
    run(proj, "rm", "-l", raw.name, "--force")
    r = run(proj, "reproduce", orig.name, "--dry-run")
    first = git(proj.root, "rev-parse", "HEAD~1").strip()
    assert f"commit {first[:10]} in a temporary git worktree" in r.stdout
    assert f"pull        {raw.name}" in r.stdout
    r = run(proj, "reproduce", orig.name)
    assert "identical  copy.txt" in r.stdout
    (new,) = [d for d in proj.exp_dirs() if d.name.endswith("_exp1-repro")]
    assert (new / "copy.txt").read_text() == "RAW"
    assert (proj.results / raw.name).is_dir()  # the upstream was pulled
    meta = read_exp(new)
    assert meta["reproduces"]["name"] == orig.name
    assert meta["git"]["commit_hash"] == first  # the recorded commit, not HEAD
    assert raw.name in meta["dependency"]
    assert len(proj.exp_dirs()) == 3  # the script adopted the folder, made no second one


def test_reproduce_stops_when_an_upstream_experiment_is_nowhere(proj):
    raw = make_exp(proj, "raw")
    exp = make_exp(proj, "uses", deps=[raw.name])
    run(proj, "rm", "-l", raw.name, "--force")
    r = run(proj, "reproduce", exp.name, "--dry-run")
    assert f"upstream {raw.name} is neither local nor on the remote" in r.stderr
    assert_one_error_line(run(proj, "reproduce", exp.name, code=1).stderr.splitlines()[-1],
                          f"upstream {raw.name}", "not found")
    assert not [d for d in proj.exp_dirs() if "repro" in d.name]


def test_reproduce_refuses_a_hand_made_experiment(proj):
    exp = make_exp(proj, "by-hand")
    meta = read_meta(exp)
    meta.args = "resutil add by-hand"
    from resutil.metadata import write_meta

    write_meta(exp, meta)
    assert_one_error_line(run(proj, "reproduce", exp.name, code=1).stderr, "made by hand")


def test_every_new_command_has_help_with_an_example():
    for args in (["pipeline"], ["pipeline", "run"], ["pipeline", "status"], ["pipeline", "graph"],
                 ["pipeline", "init"], ["reproduce"]):
        r = run_cli(*args, "--help")
        assert r.exit_code == 0 and "Example:" in r.stdout, args


def test_template_text_is_found():
    assert "steps:" in pipeline.template_text()
    assert textwrap.dedent(pipeline.template_text()).count("{needs.") >= 3
