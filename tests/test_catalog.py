"""The catalog the terminal UI and the HTML report show: every experiment, local and remote,
with its lineage and the numbers of its small result files, remote ones read without
pulling their archives, and cached so a second look reads nothing again."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from resutil import catalog as cat
from resutil.project import Project
from resutil.remote import ARCHIVE_SUFFIX
from resutil.storage import backend_class

from .helpers import cli_ok, make_clone, make_exp, make_project


def test_catalog_has_local_and_remote_experiments_with_lineage_and_metrics(tmp_path,
                                                                             monkeypatch):
    a = make_project(tmp_path / "a")
    data = make_exp(a, "data", files={"data.json": '{"n": 1000, "noise": 0.2}',
                                      "big.csv": "x\n" + "1\n" * 100})
    train = make_exp(a, "train", deps=[data.name],
                     files={"metrics.json": json.dumps({"acc": 0.91, "loss": {"final": 0.2}}),
                            "resutil-notes.yaml": "acc: 1\n", "sub/metrics.json": '{"x": 1}',
                            "label.json": '"text only"', "flags.json": "[true, false]"})
    cli_ok("push", "-A", cwd=a.root)
    b = make_clone(a, tmp_path / "b")
    cli_ok("pull", data.name, cwd=b.root)
    # (make_exp claims no identity: a later start keeps it from taking train's)
    make_exp(b, "local only", files={"metrics.yaml": "acc: 0.5\n"},
             when=datetime.now() + timedelta(minutes=1))

    whole = backend_class("local")._download

    def refuse(self, folder, name, *args, **kwargs):
        assert not name.endswith(ARCHIVE_SUFFIX), f"{name} was downloaded whole"
        return whole(self, folder, name, *args, **kwargs)

    monkeypatch.setattr(backend_class("local"), "_download", refuse)
    found = cat.catalog(Project.load(b.root))
    rows = {e.comment: e for e in found.entries}
    assert [e.comment for e in found.entries] == ["data", "train", "local only"]
    assert (rows["data"].where, rows["train"].where, rows["local only"].where) == \
        ("both", "remote", "local")
    # data.json's numbers, prefixed with its stem; a 100-row table is no metric
    assert rows["data"].metrics == {"data.n": 1000.0, "data.noise": 0.2}
    # read from the archive by ranged reads; resutil's own files, files in subfolders
    # and files without numbers are left out
    assert rows["train"].metrics == {"acc": 0.91, "loss.final": 0.2}
    assert rows["local only"].metrics == {"acc": 0.5}
    assert rows["train"].upstream == [data.name]
    assert rows["data"].downstream == [train.name]
    assert found.metric_columns() == ["acc", "data.n", "data.noise", "loss.final"]
    assert found.remote == "listed" and found.warnings == []


def test_metrics_are_cached_and_reread_when_a_file_changes(tmp_path, monkeypatch):
    a = make_project(tmp_path / "a")
    folder = make_exp(a, "run", files={"metrics.json": '{"acc": 0.5}'})
    pushed = make_exp(a, "pushed", files={"metrics.json": '{"acc": 0.7}'})
    cli_ok("push", pushed.name, cwd=a.root)
    cli_ok("rm", "--local", "--yes", pushed.name, cwd=a.root)
    project = Project.load(a.root)
    assert [e.metrics for e in cat.catalog(project).entries] == [{"acc": 0.5}, {"acc": 0.7}]

    reads = []
    monkeypatch.setattr(cat, "numbers_of", lambda text, suffix: reads.append(text) or {})
    assert [e.metrics for e in cat.catalog(Project.load(a.root)).entries] == \
        [{"acc": 0.5}, {"acc": 0.7}]
    assert reads == []  # both from the cache: no file read again

    monkeypatch.undo()
    path = folder / "metrics.json"
    path.write_text('{"acc": 0.75}')
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert cat.catalog(Project.load(a.root)).entries[0].metrics == {"acc": 0.75}


def test_catalog_of_chosen_experiments_and_without_a_remote(tmp_path):
    a = make_project(tmp_path / "a")
    one = make_exp(a, "one", files={"metrics.json": '{"acc": 1}'})
    make_exp(a, "two")
    project = Project.load(a.root)
    chosen = cat.catalog(project, names=[one.name[:22]])
    assert [e.name for e in chosen.entries] == [one.name]
    (a.root / "resutil-conf.yaml").write_text(
        (a.root / "resutil-conf.yaml").read_text().replace(str(a.remote), str(tmp_path / "gone")))
    offline = cat.catalog(Project.load(a.root), remote=False)
    assert offline.remote == "off" and len(offline.entries) == 2
