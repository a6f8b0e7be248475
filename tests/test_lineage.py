"""The lineage graph and tree: real experiments on the local backend, through the real CLI."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import networkx as nx
import pytest
import yaml
from click.testing import CliRunner, Result

from resutil import lineage
from resutil.cli import cli
from resutil.errors import LineageError, MissingExtra
from resutil.graph_export import export, format_for_path
from resutil.metadata import EXP_FILE, ExpMeta, read_meta, write_meta
from resutil.naming import make_name
from resutil.project import Project
from resutil.storage.local import LocalStorage

PROJECT = "LinProj"
T0 = datetime(2024, 7, 6, 6, 43, 39)


@pytest.fixture
def proj(tmp_path, monkeypatch) -> Path:
    """A project folder with a local-folder storage; the current directory is inside it."""
    root, store = tmp_path / "proj", tmp_path / "store"
    root.mkdir()
    store.mkdir()
    (root / "resutil-conf.yaml").write_text(
        f"project_name: {PROJECT}\nresults_dir: results\nstorage_type: local\n"
        f"storage_config:\n  path: {store}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(root)
    return root


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def add(comment: str, *deps: str) -> str:
    """``resutil add`` -> the new experiment's folder name."""
    flags = [f for d in deps for f in ("-d", d)]
    return Path(run("add", comment, *flags).stdout.strip()).name


def craft(proj: Path, minutes: int, comment: str, deps: list[tuple[str, str]] = (), **fields) -> str:
    """An experiment with hand-written metadata (any dependency, even a missing one)."""
    ws = Project.load().workspace
    name = ws.create(comment, when=T0 + timedelta(minutes=minutes)).name
    meta = ExpMeta(name=name, comment=comment, **fields)
    for dep, source in deps:
        meta.add_dependency(dep, source)
    write_meta(ws.path(name), meta)
    return name


def set_deps(proj: Path, name: str, deps: list[tuple[str, str]]) -> None:
    folder = proj / "results" / name
    meta = read_meta(folder)
    meta.dependencies = []
    for dep, source in deps:
        meta.add_dependency(dep, source)
    write_meta(folder, meta)


def warnings(result: Result) -> str:
    """stderr with the terminal's line wrapping undone."""
    return " ".join(result.stderr.split())


def graph_json(*args: str) -> tuple[dict, Result]:
    result = run("graph", "--format", "json", *args)
    return json.loads(result.stdout), result


def nodes_by_name(data: dict) -> dict[str, dict]:
    return {n["name"]: n for n in data["nodes"]}


def edges_by_name(data: dict) -> dict[tuple[str, str], dict]:
    names = {n["id"]: n["name"] for n in data["nodes"]}
    return {(names[e["source"]], names[e["target"]]): e for e in data["links"]}


# -- graph ---------------------------------------------------------------------------------
@pytest.fixture
def chain(proj) -> dict[str, str]:
    """raw -> feat -> model -> eval, plus raw -> model; sources argv/observed/declared/manual.

    raw is pushed (local and remote), old is pushed and removed locally (remote only),
    the rest are local only. model has a commit and uncommitted files.
    """
    raw = craft(proj, 0, "raw", status="finished", commit_hash="0123456789abcdef0123")
    feat = craft(proj, 1, "feat", [(raw, "argv")], status="failed")
    model = craft(proj, 2, "model", [(feat, "observed"), (raw, "declared")],
                  commit_hash="abcdef1234567890", uncommitted_files=["train.py"])
    ev = add("eval", model)  # a real `resutil add -d`: source "manual"
    old = craft(proj, 3, "old")
    run("push", raw, old)
    run("rm", "-l", old)
    return {"raw": raw, "feat": feat, "model": model, "eval": ev, "old": old}


def test_graph_json_nodes_edges_and_kinds(chain):
    data, result = graph_json()
    nodes = nodes_by_name(data)
    assert set(nodes) == set(chain.values())
    assert nodes[chain["raw"]]["kind"] == "both"
    assert nodes[chain["old"]]["kind"] == "remote"
    assert nodes[chain["feat"]]["kind"] == "local"
    assert (nodes[chain["raw"]]["local"], nodes[chain["raw"]]["remote"]) == (True, True)
    model = nodes[chain["model"]]
    assert model["commit"] == "abcdef1" and model["dirty"] is True
    assert model["status"] == "finished" and nodes[chain["feat"]]["status"] == "failed"
    assert model["date"] == "2024-07-06 06:45:39"
    assert "abcdef1*" in model["label"] and "model" in model["label"]
    assert "0123456*" not in nodes[chain["raw"]]["label"] and "0123456" in nodes[chain["raw"]]["label"]
    edges = edges_by_name(data)
    assert {k: e["label"] for k, e in edges.items()} == {
        (chain["raw"], chain["feat"]): "argv",
        (chain["feat"], chain["model"]): "observed",
        (chain["raw"], chain["model"]): "declared",
        (chain["model"], chain["eval"]): "manual",
    }
    assert not result.stderr  # no problems to report
    # The JSON is networkx node-link data.
    g = nx.node_link_graph(data, edges="links")
    assert g.number_of_nodes() == 5 and g.number_of_edges() == 4


def test_graph_dot(chain):
    out = run("graph").stdout  # dot is the default
    assert out.startswith("digraph")
    raw, feat = chain["raw"][:22], chain["feat"][:22]
    assert f'"{raw}" -> "{feat}" [label="argv"];' in out
    assert f'"{chain["model"][:22]}" -> "{chain["eval"][:22]}" [label="manual"];' in out
    label = f"{raw[:6]} raw\\n2024-07-06 06:43:39\\nfinished · 0123456\\nlocal + remote"
    assert f'"{raw}" [label="{label}"' in out
    for name, fill in ((raw, "#ddf4e4"), (feat, "#dbe9ff"), (chain["old"][:22], "#fff1d6")):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f'"{name}" [label='))
        assert fill in line


def test_graph_mermaid(chain):
    out = run("graph", "--format", "mermaid").stdout
    assert out.startswith("flowchart LR\n")
    assert '-->|"observed"|' in out and '-->|"argv"|' in out
    assert "classDef both" in out and "classDef remote" in out and "classDef local" in out
    assert "<br>" in out and "\\n" not in out


def test_graph_ancestors_descendants_and_both(chain):
    data, _ = graph_json(chain["model"], "--ancestors")
    assert set(nodes_by_name(data)) == {chain["raw"], chain["feat"], chain["model"]}
    data, _ = graph_json(chain["feat"][:22], "--descendants")  # an identity works too
    assert set(nodes_by_name(data)) == {chain["feat"], chain["model"], chain["eval"]}
    data, _ = graph_json(chain["feat"])  # neither flag: up- and downstream
    assert set(nodes_by_name(data)) == {chain["raw"], chain["feat"], chain["model"], chain["eval"]}
    data, _ = graph_json(chain["old"])
    assert set(nodes_by_name(data)) == {chain["old"]}  # remote-only names resolve too
    result = run("graph", "--ancestors", code=2)
    assert "needs the experiments" in result.stderr


def test_graph_local_flag_skips_remote(chain):
    data, _ = graph_json("--local")
    nodes = nodes_by_name(data)
    assert chain["old"] not in nodes
    assert nodes[chain["raw"]]["kind"] == "local"


def test_graph_output_file_and_format_from_suffix(chain, proj):
    result = run("graph", "-o", "lineage.mmd")
    assert result.stdout == ""
    assert (proj / "lineage.mmd").read_text(encoding="utf-8").startswith("flowchart LR")
    assert "Wrote lineage.mmd" in result.stderr
    run("graph", "-o", "g.txt")  # unknown suffix: dot
    assert (proj / "g.txt").read_text(encoding="utf-8").startswith("digraph")
    assert format_for_path("x.SVG") == "svg" and format_for_path("x") is None


def test_metadata_changes_are_seen_through_the_index(chain, proj):
    graph_json()  # fills the index
    assert (proj / "results" / ".resutil" / "cache" / lineage.LOCAL_INDEX).is_file()
    set_deps(proj, chain["eval"], [(chain["raw"], "declared")])
    data, _ = graph_json()
    edges = edges_by_name(data)
    assert (chain["model"], chain["eval"]) not in edges
    assert edges[(chain["raw"], chain["eval"])]["label"] == "declared"
    run("comment", chain["feat"], "features")  # renamed: same identity, same edges
    data, _ = graph_json()
    new = chain["feat"][:22] + "_features"
    assert edges_by_name(data)[(chain["raw"], new)]["label"] == "argv"


def test_damaged_index_is_ignored(chain, proj):
    graph_json()
    (proj / "results" / ".resutil" / "cache" / lineage.LOCAL_INDEX).write_text("{not json")
    data, _ = graph_json()
    assert set(nodes_by_name(data)) == set(chain.values())


# -- problems ------------------------------------------------------------------------------
def test_cycle_is_reported_and_rendered(proj):
    a = craft(proj, 0, "a")
    b = craft(proj, 1, "b", [(a, "argv")])
    c = craft(proj, 2, "c", [(b, "argv")])
    set_deps(proj, a, [(c, "observed")])  # a -> b -> c -> a
    selfish = craft(proj, 3, "selfish")
    set_deps(proj, selfish, [(selfish, "manual")])
    result = run("graph")
    assert result.stderr.count("Warning: dependency cycle") == 2
    assert f"{a} -> {b} -> {c} -> {a}" in warnings(result)
    assert f"{selfish} -> {selfish}" in warnings(result)
    assert result.stdout.count('penwidth=2') == 4  # the cycles' edges are drawn red
    tree = run("lineage", a).stdout
    assert "(cycle)" in tree
    g = lineage.lineage_view(Project.load()).graph
    assert len(lineage.find_problems(g).cycles) == 2


def test_dangling_reference_is_reported_and_dashed(proj):
    ghost = "zzzzzz_20991231T235959_ghost"
    a = craft(proj, 0, "a", [(ghost, "argv")])
    result = run("graph", "--format", "dot")
    assert f"{a} depends on {ghost}, which is neither local nor on the remote" in warnings(result)
    gid = ghost[:22]
    node = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith(f'"{gid}" [label='))
    assert "dashed" in node and "missing" in node
    assert f'"{gid}" -> "{a[:22]}" [label="argv" style=dashed];' in result.stdout
    mermaid = run("graph", "--format", "mermaid").stdout
    assert '-.->|"argv"|' in mermaid and "classDef missing" in mermaid
    data, _ = graph_json(a, "--ancestors")
    assert nodes_by_name(data)[ghost]["kind"] == "missing"
    tree = run("lineage", a).stdout
    assert ghost in tree and "missing" in tree


# -- 0.1.x archives ------------------------------------------------------------------------
def write_01x_archive(store: Path, name: str, deps: list[str]) -> None:
    """An archive as resutil 0.1.x pushed it: no sidecar, 0.1.x metadata keys only."""
    folder = store / PROJECT
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"args": "python train.py", "result_dir": f"results/{name}",
            "dependency": [f"results/{d}" for d in deps],
            "git": {"commit_hash": "feedface00", "uncommited_files": []}}
    with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
        zf.writestr(EXP_FILE, yaml.safe_dump(meta))
        zf.writestr("out.txt", "x" * 1000)


def test_01x_archive_without_sidecar_is_read_once(proj, tmp_path, monkeypatch):
    base = craft(proj, 0, "base")
    run("push", base)
    legacy = make_name(T0 + timedelta(minutes=1), "legacy").name
    write_01x_archive(tmp_path / "store", legacy, [base])
    assert not (tmp_path / "store" / f"{PROJECT}.resutil" / f"{legacy[:22]}.json").exists()

    fetched = count_fetches(monkeypatch)
    for i in range(3):
        data, _ = graph_json()
        nodes, edges = nodes_by_name(data), edges_by_name(data)
        assert nodes[legacy]["kind"] == "remote" and nodes[legacy]["commit"] == "feedface00"[:7]
        assert edges[(base, legacy)]["label"] == "recorded"
        if i == 0:
            first = list(fetched)
    # Read once, then cached: its directory and its metadata member by ranged reads only.
    assert set(first) == {(f"{legacy}.zip", "range")}
    assert fetched == first
    tree = run("lineage", legacy).stdout
    assert base in tree.splitlines()[1]
    assert fetched == first


def count_fetches(monkeypatch) -> list:
    """The objects the local storage hands out from now on (resutil's own seams): the name
    of each one handed out whole, (name, "range") for each ranged read."""
    fetched: list = []
    original, ranged = LocalStorage.fetched, LocalStorage._download_range

    def counting(self, folder, name, *args, **kwargs):
        fetched.append(name)
        return original(self, folder, name, *args, **kwargs)

    def counting_ranges(self, folder, name, *args, **kwargs):
        fetched.append((name, "range"))
        return ranged(self, folder, name, *args, **kwargs)

    monkeypatch.setattr(LocalStorage, "fetched", counting)
    monkeypatch.setattr(LocalStorage, "_download_range", counting_ranges)
    return fetched


def test_graph_never_downloads_archives_with_sidecars(chain, monkeypatch):
    fetched = count_fetches(monkeypatch)
    graph_json()
    assert not [n for n in fetched if (n[0] if isinstance(n, tuple) else n).endswith(".zip")]


# -- svg / png -----------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_and_png_with_dot(chain, proj):
    run("graph", "-o", "lineage.svg")
    svg = (proj / "lineage.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "observed" in svg and "model" in svg
    run("graph", chain["model"], "--ancestors", "--format", "png", "-o", "out.bin")
    assert (proj / "out.bin").read_bytes().startswith(b"\x89PNG")


def test_missing_dot_is_a_clear_error(chain, proj, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = run("graph", "-o", "lineage.svg", code=1)
    assert result.stderr.startswith("Error: Graphviz's 'dot' program is not installed")
    assert "apt-get install graphviz" in result.stderr and "brew install graphviz" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (proj / "lineage.svg").exists()


def test_missing_graphviz_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'resutil\[graphviz\]'"):
        export(nx.DiGraph([("a", "b")]), "svg")


def test_svg_needs_an_output_file(chain):
    result = run("graph", "--format", "svg", code=2)
    assert "needs -o FILE" in result.stderr


# -- lineage tree --------------------------------------------------------------------------
def test_lineage_tree_upstream_and_downstream(chain):
    out = run("lineage", chain["eval"]).stdout
    lines = out.splitlines()
    assert lines[0].startswith(chain["eval"])
    assert chain["model"] in lines[1] and "(manual)" in lines[1]
    assert any(chain["feat"] in ln and "(observed)" in ln for ln in lines)
    assert "abcdef1*" in lines[1]  # short commit and dirty mark
    raw_lines = [ln for ln in lines if chain["raw"] in ln]
    assert len(raw_lines) == 2 and sum("(shown above)" in ln for ln in raw_lines) == 1
    assert chain["old"] not in out
    down = run("lineage", chain["raw"], "--downstream").stdout.splitlines()
    assert down[0].startswith(chain["raw"]) and "local + remote" in down[0]
    assert any(chain["eval"] in ln for ln in down)
    assert not any(chain["old"] in ln for ln in down)


def test_lineage_unknown_experiment(proj):
    craft(proj, 0, "a")
    result = run("lineage", "nosuch", code=1)
    assert result.stderr.startswith("Error:")


def test_lineage_tree_handles_long_chains():
    g = nx.DiGraph()
    n = 3000
    g.add_nodes_from((i, {"name": str(i), "kind": "local"}) for i in range(n))
    g.add_edges_from((i, i + 1, {"label": "argv"}) for i in range(n - 1))
    top = lineage.lineage_tree(g, n - 1)
    depth = 0
    while top.children:
        top, depth = top.children[0], depth + 1
    assert depth == n - 1


# -- export, generic -------------------------------------------------------------------------
def test_export_escapes_labels():
    g = nx.DiGraph()
    g.add_node('we"ird\\', label='a "quoted" #1 <b> & x|y`\nsecond line', kind="step")
    g.add_node("plain", label="p", kind="unknown-kind")
    g.add_edge('we"ird\\', "plain", label='says "hi" | #2')
    dot = export(g, "dot")
    assert '"we\\"ird\\\\" [label="a \\"quoted\\" #1 <b> & x|y`\\nsecond line"' in dot
    assert 'label="says \\"hi\\" | #2"' in dot
    mermaid = export(g, "mermaid")
    assert 'n0["a #quot;quoted#quot; #35;1 #lt;b#gt; #amp; x#124;y#96;<br>second line"]' in mermaid
    assert 'n0 -->|"says #quot;hi#quot; #124; #35;2"| n1' in mermaid
    assert "classDef step" in mermaid and "class n0 step" in mermaid
    data = json.loads(export(g, "json"))
    assert data["nodes"][0]["id"] == 'we"ird\\'


def test_export_json_drops_objects_and_unknown_format():
    g = nx.DiGraph()
    g.add_node("a", label="a", kind="local", record=object(), tags=["x", 1])
    data = json.loads(export(g, "json"))
    assert data["nodes"] == [{"label": "a", "kind": "local", "tags": ["x", 1], "id": "a"}]
    with pytest.raises(LineageError, match="unknown graph format"):
        export(g, "pdf")


def test_help_texts_end_with_an_example():
    for cmd in ("graph", "lineage"):
        out = run(cmd, "--help").stdout
        assert "Example: resutil " + cmd in out


def test_mermaid_warns_past_the_renderers_default_limits():
    from resutil.graph_export import mermaid_warning

    small = nx.DiGraph([(i, i + 1) for i in range(10)])
    assert mermaid_warning(small, export(small, "mermaid")) is None
    big = nx.DiGraph([(i, i + 1) for i in range(501)])
    note = mermaid_warning(big, export(big, "mermaid"))
    assert note and "501 edges" in note and "--format svg" in note


def test_local_flag_says_the_remote_was_not_searched(chain):
    set_deps(Path.cwd(), chain["feat"], [(chain["old"], "argv")])  # old is remote only
    assert "neither" not in run("graph").stderr
    result = run("graph", "--local")
    assert f"depends on {chain['old']}, which is not local (the remote was not searched)" in warnings(result)


def test_self_loop_inside_a_larger_cycle_is_reported_once_each():
    g = nx.DiGraph([("a", "b"), ("b", "a"), ("a", "a")])
    cycles = lineage.find_problems(g).cycles
    assert ["a"] in cycles and len(cycles) == len({tuple(c) for c in cycles})


def test_warnings_show_names_literally(proj):
    ghost = "zzzzzz_20991231T235959_[bold]x"
    craft(proj, 0, "a", [(ghost, "argv")])
    assert ghost in run("graph").stderr
