"""Many experiments: a push of many lists the remote once, a fresh clone's graph reads the
lineage index its project's clones share on the storage instead of every sidecar (and
never trusts an entry of it for other versions, or of the wrong shape), and metadata read
twice in one process is parsed once yet always current."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from resutil.lineage import index as lineage_index
from resutil.metadata import read_meta, write_meta
from resutil.storage.local import LocalStorage

from .helpers import cli_in, cli_ok, make_clone, make_exp

T0 = datetime(2024, 7, 6, 6, 43, 39)
SHARED = lineage_index.SHARED_INDEX


@pytest.fixture
def counted(monkeypatch):
    """What the local storage lists and reads whole from now on (resutil's own seams)."""
    seen: dict[str, list[str]] = {"list": [], "read": []}
    listing, fetched = LocalStorage._list, LocalStorage.fetched

    def count_list(self, folder):
        seen["list"].append(folder)
        return listing(self, folder)

    def count_read(self, folder, name, *args, **kwargs):
        seen["read"].append(name)
        return fetched(self, folder, name, *args, **kwargs)

    monkeypatch.setattr(LocalStorage, "_list", count_list)
    monkeypatch.setattr(LocalStorage, "fetched", count_read)
    return seen


def chain(proj, n: int) -> list[str]:
    """n experiments, each made from the one before, pushed with one push -A."""
    names: list[str] = []
    for i in range(n):
        names.append(make_exp(proj, f"e{i}", {"x.txt": str(i)}, deps=names[-1:],
                              when=T0 + timedelta(minutes=i)).name)
    cli_ok("push", "-A")
    return names


def graph(proj) -> dict:
    r = cli_in(proj, "graph", "--format", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    return {n["name"]: n for n in data["nodes"]}, sorted(
        (e["source"], e["target"]) for e in data["links"])


def test_a_push_of_many_lists_the_remote_once(proj, counted):
    names = chain(proj, 6)
    assert sorted(counted["list"]) == ["Proj", "Proj.resutil"]
    assert sorted(proj.remote_zips()) == sorted(f"{n}.zip" for n in names)
    counted["list"].clear()
    assert "Nothing to push" in cli_ok("push", "-A").stderr
    assert sorted(counted["list"]) == ["Proj", "Proj.resutil"]


def test_a_fresh_clone_reads_the_shared_lineage_index(proj, tmp_path, monkeypatch, counted):
    monkeypatch.setattr(lineage_index, "SHARED_MIN", 3)
    names = chain(proj, 5)
    first = make_clone(proj, tmp_path / "first")
    counted["read"].clear()
    expected = graph(first)  # the first reader: every sidecar, then it shares the index
    assert len([n for n in counted["read"] if n.endswith(".json")]) == 5
    assert (proj.sidecar_dir / SHARED).is_file()
    assert sorted(n for n in expected[0]) == sorted(names) and len(expected[1]) == 4

    fresh = make_clone(proj, tmp_path / "fresh")
    counted["read"].clear()
    assert graph(fresh) == expected
    assert counted["read"] == []  # no sidecar read at all (the index: one ranged read)

    # An experiment relabelled since: its entry names older versions and does not count.
    cli_ok("comment", names[2], "relabelled", cwd=proj.root)
    later = make_clone(proj, tmp_path / "later")
    counted["read"].clear()
    nodes, _ = graph(later)
    assert names[2][:22] + "_relabelled" in nodes
    assert counted["read"] == [f"{names[2][:22]}.finished.json"]


@pytest.mark.parametrize("damage", ["not json", "wrong version", "wrong types", "huge"])
def test_a_damaged_shared_index_is_ignored(proj, tmp_path, monkeypatch, damage):
    monkeypatch.setattr(lineage_index, "SHARED_MIN", 3)
    names = chain(proj, 4)
    expected = graph(make_clone(proj, tmp_path / "first"))
    path = proj.sidecar_dir / SHARED
    index = json.loads(path.read_text())
    if damage == "not json":
        path.write_bytes(b"\x00garbage{")
    elif damage == "wrong version":
        index["version"] = "0:old"
        path.write_text(json.dumps(index))
    elif damage == "wrong types":
        status = lineage_index._PACKED.index("status")
        for sig, packed in index["entries"].values():
            packed[status] = 5
            packed[-1] = [[None, "argv", None, None]]  # the dependencies
        path.write_text(json.dumps(index))
    else:
        monkeypatch.setattr(lineage_index, "MAX_SHARED", 100)
    assert graph(make_clone(proj, tmp_path / "after")) == expected
    assert len(expected[0]) == len(names)


def test_metadata_read_twice_is_current(proj):
    folder = make_exp(proj, "x", when=T0, status="failed")
    assert read_meta(folder).status == "failed"
    meta = read_meta(folder)
    meta.status = "interrupted"
    write_meta(folder, meta)
    assert read_meta(folder).status == "interrupted"
    meta.status = "finished"  # a rewrite of the same size, at once
    meta.comment = "y"
    write_meta(folder, meta)
    again = read_meta(folder, with_manifest=False)
    assert (again.status, again.comment) == ("finished", "x")  # (the folder names it)
    again.environment["changed"] = True  # a caller's copy is its own
    assert "changed" not in read_meta(folder).environment


def test_every_field_of_the_shared_index_is_checked():
    """An entry of the shared index is remote data: each packed field has a kind to check
    (a field added to ExpMeta must be given one)."""
    assert set(lineage_index._PACKED) <= set(lineage_index._KINDS)


def test_a_long_list_on_a_terminal_is_laid_out_by_hand():
    """Past ui.BIG_TABLE rows the table is written line by line (rich takes seconds for
    10,000): the same columns, and a name too long for the terminal folded under itself."""
    import io

    from rich.console import Console

    from resutil import ui

    out = io.StringIO()
    rows = [("✓", "", "finished", "aapiyl_20240706T064339_" + "x" * 30), ("", "✓", "dead", "b")]
    ui._big_table(Console(file=out, width=40, highlight=False, color_system=None),
                  ("Remote", "Local", "Status", "Experiment"), rows, [6, 5, 8])
    assert out.getvalue().splitlines() == [
        "Remote  Local  Status    Experiment",
        "✓              finished  aapiyl_20240706T0643",
        "                         39_xxxxxxxxxxxxxxxxx",
        "                         xxxxxxxxxxxxx",
        "        ✓      dead      b",
    ]
