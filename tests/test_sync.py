"""push and pull: the dependency closure, --no-dependency, --dry-run, -A, -j, and the remote
layout a 0.1.x client reads."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta

import pytest

from .helpers import (
    cli_in,
    cli_ok as ok,
    NAME_RE,
    make_clone,
    make_exp,
    read_exp,
    tree,
)

T0 = datetime(2024, 7, 6, 6, 43, 39)


@pytest.fixture
def chain(proj):
    """raw <- feat <- model, plus an unrelated experiment."""
    raw = make_exp(proj, "raw", {"data.csv": "x\n" * 500}, when=T0)
    feat = make_exp(proj, "feat", {"f.csv": "y\n" * 500}, when=T0.replace(hour=7), deps=[raw.name],
                    source="argv")
    model = make_exp(proj, "model", {"m.bin": bytes(range(256)) * 40}, when=T0.replace(hour=8),
                     deps=[f"results/{feat.name}"], source="observed")
    other = make_exp(proj, "other", when=T0.replace(hour=9))
    return raw, feat, model, other


def pushed(proj) -> set[str]:
    return {n[:-4] for n in proj.remote_zips()}


def local(proj) -> set[str]:
    return {d.name for d in proj.exp_dirs()}


def test_push_includes_the_upstream_closure(proj, chain):
    raw, feat, model, other = chain
    r = ok("push", model.name[:6])  # by its unique prefix
    assert pushed(proj) == {raw.name, feat.name, model.name}
    # Not a terminal: one line per transfer, no progress bars in a CI log.
    assert sorted(r.stderr.splitlines()) == sorted(f"Pushed {e.name}" for e in (raw, feat, model))
    assert r.stdout == ""
    # Pushing again finds nothing missing upstream.
    r = ok("push", "--dry-run", model.name)
    assert r.stdout.splitlines() == [f"would push {model.name} (requested)"]


def test_push_no_dependency(proj, chain):
    raw, feat, model, other = chain
    ok("push", "--no-dependency", model.name)
    assert pushed(proj) == {model.name}


def test_push_dry_run_moves_nothing(proj, chain):
    raw, feat, model, other = chain
    r = ok("push", "-n", model.name)
    assert pushed(proj) == set()
    assert tree(proj.remote) <= {proj.name, f"{proj.name}.resutil"}
    lines = r.stdout.splitlines()
    assert lines[0] == f"would push {model.name} (requested)"
    assert set(lines) == {
        f"would push {model.name} (requested)",
        f"would push {feat.name} (upstream of {model.name})",
        f"would push {raw.name} (upstream of {feat.name})",
    }


@pytest.mark.parametrize("jobs", ["1", "8"])
def test_push_all_skips_running_and_pushed(proj, chain, jobs):
    raw, feat, model, other = chain
    running = make_exp(proj, "running", when=T0.replace(hour=10), status="running")
    ok("push", raw.name)
    r = ok("push", "-A", "-j", jobs)
    assert pushed(proj) == {raw.name, feat.name, model.name, other.name}
    assert f"Skipped {running.name}: still running" in r.stderr
    assert f"Pushed {raw.name}" not in r.stderr
    r = ok("push", "-A")
    assert "Pushed" not in r.stderr


def test_push_warns_about_an_upstream_that_exists_nowhere(proj):
    exp = make_exp(proj, "orphan", deps=["aaaaaa_20240101T000000_gone"], when=T0)
    r = ok("push", exp.name)
    assert pushed(proj) == {exp.name}
    assert "aaaaaa_20240101T000000_gone" in r.stderr and "Warning" in r.stderr


def test_push_and_pull_without_names_mean_all_as_in_0_1_x(proj, tmp_path):
    exps = [make_exp(proj, c, when=T0 + timedelta(minutes=i)) for i, c in enumerate("ab")]
    r = ok("push")
    assert [f"Pushed {e.name}" in r.stderr for e in exps] == [True, True]
    other = make_clone(proj, tmp_path / "other")
    r = cli_in(other, "pull")
    assert [e.name for e in other.exp_dirs()] == [e.name for e in exps]


@pytest.fixture
def on_remote_only(proj, chain):
    """The chain pushed, then removed locally (as on a fresh machine)."""
    ok("push", "-A")
    snapshot = {exp.name: {p.relative_to(exp).as_posix(): p.read_bytes()
                           for p in exp.rglob("*") if p.is_file()} for exp in chain}
    for exp in chain:
        shutil.rmtree(exp)
    return chain, snapshot


def test_pull_includes_the_upstream_closure_byte_for_byte(proj, on_remote_only):
    (raw, feat, model, other), snapshot = on_remote_only
    r = ok("pull", model.name[:10])
    assert local(proj) == {raw.name, feat.name, model.name}
    for exp in (raw, feat, model):
        assert f"Pulled {exp.name}" in r.stderr
        files = {p.relative_to(exp).as_posix(): p.read_bytes() for p in exp.rglob("*")
                 if p.is_file()}
        assert files == snapshot[exp.name]
    assert ok("verify", "--local", model.name, feat.name, raw.name).stderr.count("ok") == 3
    assert not list((proj.results / ".resutil" / "tmp").glob("*"))  # scratch cleaned up


def test_pull_no_dependency_and_dry_run(proj, on_remote_only):
    (raw, feat, model, other), _ = on_remote_only
    r = ok("pull", "--dry-run", model.name)
    assert local(proj) == set()
    assert set(r.stdout.splitlines()) == {
        f"would pull {model.name} (requested)",
        f"would pull {feat.name} (upstream of {model.name})",
        f"would pull {raw.name} (upstream of {feat.name})",
    }
    ok("pull", "--no-dependency", model.name)
    assert local(proj) == {model.name}
    # Pulling it again pulls only the upstream it lacks.
    r = ok("pull", model.name)
    assert f"Skipped {model.name}: already local" in r.stderr
    assert local(proj) == {raw.name, feat.name, model.name}


def test_pull_all(proj, on_remote_only):
    (raw, feat, model, other), _ = on_remote_only
    ok("pull", "-A", "-j", "2")
    assert local(proj) == {raw.name, feat.name, model.name, other.name}
    r = ok("pull", "-A")
    assert "Nothing to pull" in r.stderr


def test_remote_layout_is_the_0_1_x_layout(proj, chain):
    ok("push", "-A")
    ok("comment", "aapiyl", "renamed")  # a relabel must not leave extra entries behind
    entries = sorted(p.name for p in proj.archive_dir.iterdir())
    assert len(entries) == 4
    for entry in entries:
        assert entry.endswith(".zip")
        assert NAME_RE.match(entry[:-4]), entry
        assert (proj.archive_dir / entry).is_file()
    # Sidecars and identity claims live beside the project folder, one each per identity.
    sidecars = sorted(p.name for p in proj.sidecar_dir.iterdir() if p.suffix == ".json")
    assert sidecars == sorted(e[:22] + ".finished.json" for e in entries)
    claims = sorted(p.name for p in proj.sidecar_dir.iterdir() if p.suffix != ".json")
    assert claims == sorted(e[:22] + ".claim" for e in entries)
    assert sorted(p.name for p in proj.remote.iterdir()) == [proj.name, f"{proj.name}.resutil"]
    for s in sidecars:
        data = json.loads((proj.sidecar_dir / s).read_text())
        assert data["archive"]["name"] in entries


def test_prefix_is_minutes_since_2024_in_base26(proj):
    exp = make_exp(proj, "", when=datetime(2024, 7, 6, 6, 43, 39))
    assert exp.name == "aapiyl_20240706T064339"
    ok("push", exp.name)
    assert proj.remote_zips() == ["aapiyl_20240706T064339.zip"]
    assert re.match(r"^[a-z]{6}_\d{8}T\d{6}(_.*)?$", proj.remote_zips()[0][:-4])


def test_relabel_while_offline_then_push_leaves_one_archive(proj, chain, monkeypatch):
    raw = chain[0]
    ok("push", raw.name)
    monkeypatch.setenv("RESUTIL_NO_REMOTE", "1")
    ok("comment", raw.name, "offline-label")
    monkeypatch.delenv("RESUTIL_NO_REMOTE")
    new = raw.name[:22] + "_offline-label"
    ok("push", new)
    assert [z for z in proj.remote_zips() if z.startswith(raw.name[:22])] == [f"{new}.zip"]
    assert read_exp(proj.results / new)["comment"] == "offline-label"


def test_a_push_in_progress_elsewhere_is_left_alone(proj, chain):
    """Only part files nobody has written to for a long time are cleaned up."""
    proj.archive_dir.mkdir(parents=True, exist_ok=True)
    busy = proj.archive_dir / f".{chain[3].name}.zip.part-0123456789ab"
    busy.write_bytes(b"another process is writing this")
    ok("push", chain[0].name)
    assert busy.exists()
    assert [r["name"] for r in json.loads(ok("list", "--json").stdout) if r["remote"]] == [
        chain[0].name
    ]
