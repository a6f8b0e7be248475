"""``resutil report``: the static HTML report, checked in its source and in a real browser.

The browser tests drive headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
at /usr/bin/chromium and /usr/bin/chromedriver, given to Selenium explicitly so that it
never looks for a browser or driver on the network) through one browser session for the
whole module. They are skipped, saying why, only when those programs are missing
(``scripts/test.sh`` installs them as root on Debian, as in CI). Each browser test saves a
screenshot under ``tests/artifacts/`` (gitignored), named after the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from resutil.metadata import ExpMeta, write_meta
from resutil.naming import new_run_id
from resutil.workspace import Workspace

from .helpers import Proj, cli_ok, git, make_project, run_cli

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EXAMPLE = ["data.py", "features.py", "train.py", "evaluate.py", "svg.py", "resutil-pipeline.yaml"]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
XSS = "<script>alert(1)</script>"
QUOTES = "\"'&<>"


def _commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


@pytest.fixture(scope="module")
def env_clean():
    """The module-scoped fixtures' environment: no developer settings, no prompts."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("RESUTIL_"):
                mp.delenv(key)
        mp.setenv("RESUTIL_NO_INTERACTIVE", "1")
        yield


@pytest.fixture(scope="module")
def example(tmp_path_factory, env_clean) -> tuple[Proj, Path]:
    """The example pipeline run twice (the second time with other train params and an
    uncommitted edit of train.py), and its report: (project, index.html)."""
    pytest.importorskip("numpy")
    proj = make_project(tmp_path_factory.mktemp("example"), git=True)
    for name in EXAMPLE:
        shutil.copy(REPO / "example_pipeline" / name, proj.root / name)
    _commit(proj.root, "the example pipeline")
    cli_ok("pipeline", "run", cwd=proj.root)
    spec = proj.root / "resutil-pipeline.yaml"
    spec.write_text(spec.read_text().replace("epochs: 2000", "epochs: 300"))
    with open(proj.root / "train.py", "a") as f:
        f.write("# a shorter run\n")
    cli_ok("pipeline", "run", cwd=proj.root)
    r = cli_ok("report", "-o", "report", cwd=proj.root)
    index = proj.root / "report" / "index.html"
    assert Path(r.stdout.strip()) == index.resolve(), r.stdout  # where to open it
    return proj, index


def _hostile(base: Path) -> tuple[Proj, Path]:
    """A project with one experiment whose arguments, step, metrics keys and text results
    hold markup and quotes, and its report."""
    proj = make_project(base)
    ws = Workspace(proj.root / "results")
    when = datetime(2025, 1, 1, 9, 0)
    name = ws.create("xss-'&", when).name
    folder = ws.path(name)
    (folder / "metrics.json").write_text(json.dumps({XSS: 1.5, QUOTES: 2.5}))
    (folder / "notes.txt").write_text(f"note {XSS} {QUOTES}\n")
    (folder / f"{QUOTES[1:3]}plot.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    write_meta(folder, ExpMeta(
        name=name, comment="xss-'&", run_id=new_run_id(), status="finished",
        args=f"python s.py --note {XSS}", argv=["s.py", "--note", XSS, QUOTES],
        started_at=when.isoformat(), ended_at=(when + timedelta(seconds=1)).isoformat(),
        pipeline={"step": f"{XSS}{QUOTES}", "params": {XSS: QUOTES}}))
    cli_ok("report", "-o", "report", cwd=proj.root)
    return proj, proj.root / "report" / "index.html"


# -- the HTML source ----------------------------------------------------------------------------
def test_the_report_of_the_example_has_a_row_a_page_and_a_node_per_experiment(example):
    proj, index = example
    names = sorted(p.name for p in proj.results.iterdir() if not p.name.startswith("."))
    assert len(names) == 6  # data and features (reused the second time), 2 x train, evaluate
    html = index.read_text()
    assert html.count("<tr data-identity=") == len(names)
    assert html.count('<a class="node"') == len(names)
    for name in names:
        assert (index.parent / "exp" / f"{name[:22]}.html").is_file()
        assert f'href="exp/{name[:22]}.html"' in html
    # metrics of the evaluate step are columns; train.json's are prefixed "train."
    assert ">accuracy</th>" in html and ">train.epochs</th>" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


def test_a_page_has_metadata_arguments_code_diff_images_and_results(example):
    proj, index = example
    trains = sorted(p.name for p in proj.results.glob("*_train"))
    page = (index.parent / "exp" / f"{trains[-1][:22]}.html").read_text()
    assert "Compared with the previous run of step train" in page
    assert f'href="../exp/{trains[0][:22]}.html"' in page
    assert '<span class="add">+# a shorter run</span>' in page
    assert '<span class="del">-    params: {epochs: 2000' in page
    assert "epochs" in page and "--lr" in page
    assert 'src="../files/' in page and "loss.svg" in page
    assert (index.parent / "files" / trains[-1][:22] / "loss.svg").is_file()
    assert "train.json" in page  # its small text result, shown
    first = (index.parent / "exp" / f"{trains[0][:22]}.html").read_text()
    # the first train run: no earlier run of its step; its upstream has the same commit
    assert "Compared with its upstream experiment" in first and "The same code." in first


def test_markup_in_comments_arguments_and_metrics_stays_text(tmp_path):
    _, index = _hostile(tmp_path)
    pages = [index, *index.parent.glob("exp/*.html")]
    for page in pages:
        html = page.read_text()
        assert XSS not in html, page
        assert "alert(1)" in html
    html = index.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # a metric column, the SVG's step
    assert "\\u003cscript\\u003ealert(1)" in html  # the same in the JSON for the script
    exp = next(index.parent.glob("exp/*.html")).read_text()
    for text in ("--note &lt;script&gt;",
                 "note &lt;script&gt;alert(1)&lt;/script&gt; &#34;&#39;&amp;&lt;&gt;"):
        assert text in exp
    assert re.search(r'src="\.\./files/[a-z_0-9T]+/%27%26plot\.svg"', exp), exp


def test_cli_refuses_a_folder_in_results_and_leaves_other_files_alone(proj):
    r = run_cli("report", "-o", "results/rep")
    assert r.exit_code == 1 and "inside the results folder" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    out = proj.root / "rep"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "index.html").write_text("old")
    r = cli_ok("report", "-o", "rep")
    assert r.stdout.strip() == str((out / "index.html").resolve())
    assert (out / "mine.txt").read_text() == "keep me"
    assert "resutil report" in (out / "index.html").read_text()
    assert not any(p.name.startswith(".index.html") for p in out.iterdir())  # no scratch file


def test_a_remote_only_experiment_is_reported_without_pulling_it(tmp_path):
    src = make_project(tmp_path / "a")
    ws = Workspace(src.root / "results")
    name = ws.create("remote-one", datetime(2025, 2, 1, 10, 0)).name
    folder = ws.path(name)
    (folder / "metrics.json").write_text('{"acc": 0.75}')
    (folder / "plot.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"></svg>')
    write_meta(folder, ExpMeta(name=name, comment="remote-one", run_id=new_run_id(),
                               status="finished", started_at="2025-02-01T10:00:00"))
    cli_ok("push", "-A", cwd=src.root)
    clone = make_project(tmp_path / "b")
    clone.root.joinpath("resutil-conf.yaml").write_text(
        src.root.joinpath("resutil-conf.yaml").read_text())
    r = cli_ok("report", "-o", "rep", cwd=clone.root)
    index = Path(clone.root / "rep" / "index.html")
    assert r.stdout.strip().endswith("index.html")
    html = index.read_text()
    assert '<td class="num" data-v="0.75">0.75</td>' in html
    page = (clone.root / "rep" / "exp" / f"{name[:22]}.html").read_text()
    assert "plot.svg" in page and (clone.root / "rep" / "files" / name[:22] / "plot.svg").is_file()
    assert not [p for p in (clone.root / "results").iterdir() if not p.name.startswith(".")]


def test_named_experiments_only_and_a_name_found_nowhere_is_one_error(proj):
    ws = Workspace(proj.root / "results")
    names = []
    for i in range(3):
        n = ws.create(f"e{i}", datetime(2025, 3, 1, 9, i)).name
        write_meta(ws.path(n), ExpMeta(name=n, comment=f"e{i}", run_id=new_run_id()))
        names.append(n)
    cli_ok("report", names[0], "e2", "-o", "rep", "--local")
    html = (proj.root / "rep" / "index.html").read_text()
    assert html.count("<tr data-identity=") == 2 and names[1] not in html
    r = run_cli("report", "nosuch", "-o", "rep")
    assert r.exit_code == 1 and "Traceback" not in r.stderr and "nosuch" in r.stderr


def test_a_cycle_and_a_missing_upstream_are_laid_out_one_node_each():
    from resutil.report.svg import Node, layout, lineage_svg

    nodes = [Node(k, f"exp/{k}.html", k, k, "") for k in "abcd"]
    edges = [("a", "b"), ("b", "c"), ("c", "b"), ("c", "d"), ("x", "a")]
    pos, cyclic = layout(nodes, edges)
    assert set(pos) == set("abcd") and cyclic == {("b", "c"), ("c", "b")}
    assert pos["a"][0] < pos["b"][0] == pos["c"][0] < pos["d"][0]
    svg = lineage_svg(nodes, edges)
    assert svg.count('<a class="node"') == 4 and svg.count('class="edge cycle"') == 2


def test_import_resutil_does_not_load_jinja2():
    code = "import sys, resutil, resutil.cli; sys.exit('jinja2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_templates_are_package_data():
    from resutil.report.render import TEMPLATES

    assert {p.name for p in TEMPLATES.glob("*.html.j2")} >= {
        "base.html.j2", "index.html.j2", "experiment.html.j2"}
    assert TEMPLATES.parent.name == "report" and TEMPLATES.parent.parent.name == "resutil"


# -- in a real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, never touching the network."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        # CI installs them (scripts/bootstrap.sh, as root): there a missing browser is a
        # failure, never a silent pass.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's chromium and "
                    "chromium-driver (scripts/test.sh does, as root) to run the browser tests")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="resutil-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--window-size=1300,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _visible_names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.find_element(By.CSS_SELECTOR, "td a").text
            for r in driver.find_elements(By.CSS_SELECTOR, "#exps tbody tr") if r.is_displayed()]


def test_browser_table_sorts_and_filters(browser, example):
    from selenium.webdriver.common.by import By

    proj, index = example
    names = sorted(p.name for p in proj.results.iterdir() if not p.name.startswith("."))
    browser.get(index.as_uri())
    assert _visible_names(browser) == names[::-1]  # newest first
    header = {th.text.strip(" ▲▼"): th for th in browser.find_elements(By.CSS_SELECTOR, "#exps th")}
    header["Experiment"].click()
    assert _visible_names(browser) == names
    header["Experiment"].click()
    assert _visible_names(browser) == names[::-1]
    header["train.epochs"].click()  # numbers, ascending, empty cells last
    rows = _visible_names(browser)
    assert [n.rsplit("_", 1)[1] for n in rows[:2]] == ["train", "train"]
    epochs = [json.loads((proj.results / n / "train.json").read_text())["epochs"]
              for n in rows[:2]]
    assert epochs == sorted(epochs) and epochs[0] < epochs[1]
    header["train.epochs"].click()
    assert _visible_names(browser)[:2] == rows[:2][::-1]
    box = browser.find_element(By.ID, "filter")
    box.send_keys("train")
    assert sorted(_visible_names(browser)) == [n for n in names if n.endswith("_train")]
    assert browser.find_element(By.ID, "shown").text == "2 shown"
    box.send_keys(" finished 300")  # every word must appear: only the second train run
    shown = _visible_names(browser)
    assert len(shown) == 1 and shown[0].endswith("_train")
    box.clear()
    box.send_keys("nothing-like-this")
    assert _visible_names(browser) == []
    _shot(browser, "report-index-filtered")


def test_browser_lineage_nodes_link_to_pages(browser, example):
    from selenium.webdriver.common.by import By

    proj, index = example
    names = sorted(p.name for p in proj.results.iterdir() if not p.name.startswith("."))
    browser.get(index.as_uri())
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.lineage a.node")
    assert len(nodes) == len(names)
    assert sorted(n.get_attribute("data-key") for n in nodes) == sorted(n[:22] for n in names)
    edges = browser.find_elements(By.CSS_SELECTOR, "svg.lineage path.edge")
    assert len(edges) == 7  # data-features, features-train x2, train/features-evaluate x2
    _shot(browser, "report-index")
    features = next(n for n in names if n.endswith("_features"))
    node = next(n for n in nodes if n.get_attribute("data-key") == features[:22])
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", node)
    node.find_element(By.CSS_SELECTOR, "rect").click()
    assert browser.current_url.endswith(f"/exp/{features[:22]}.html")
    assert browser.find_element(By.TAG_NAME, "h1").text == features


def test_browser_experiment_page_shows_its_plot(browser, example):
    from selenium.webdriver.common.by import By

    proj, index = example
    for step, plot in (("evaluate", "decision.svg"), ("train", "loss.svg")):
        name = max(p.name for p in proj.results.glob(f"*_{step}"))
        browser.get((index.parent / "exp" / f"{name[:22]}.html").as_uri())
        img = browser.find_element(By.CSS_SELECTOR, f"img[alt='{plot}']")
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        _shot(browser, f"report-{step}")
    browser.find_element(By.LINK_TEXT, "← all experiments").click()
    assert browser.current_url.endswith("/index.html")


def test_browser_markup_stays_text(browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _, index = _hostile(tmp_path)
    page = next(index.parent.glob("exp/*.html"))
    for url in (index.as_uri(), page.as_uri()):
        browser.get(url)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is the check
        assert XSS in browser.find_element(By.TAG_NAME, "body").text
    assert QUOTES in browser.find_element(By.CSS_SELECTOR, "pre.argv").text
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.text")]
    assert f"note {XSS} {QUOTES}" in texts and any(XSS in t for t in texts), texts
    img = browser.find_element(By.CSS_SELECTOR, "figure img")
    assert browser.execute_script("return arguments[0].naturalWidth", img) > 0
    browser.get(index.as_uri())
    assert XSS in browser.find_element(By.CSS_SELECTOR, "svg.lineage").text
    _shot(browser, "report-markup")


def test_a_dependency_cycle_and_a_broken_record_are_reported_not_crashed_on(proj):
    ws = Workspace(proj.root / "results")
    a = ws.create("a", datetime(2025, 4, 1, 9, 0)).name
    b = ws.create("b", datetime(2025, 4, 1, 9, 1)).name
    broken = ws.create("broken", datetime(2025, 4, 1, 9, 2)).name
    for name, up in ((a, b), (b, a)):
        meta = ExpMeta(name=name, comment=name[23:], run_id=new_run_id())
        meta.add_dependency(up, "manual")
        write_meta(ws.path(name), meta)
    (ws.path(broken) / "resutil-exp.yaml").write_text("args: [unclosed\n")
    r = cli_ok("report", "-o", "rep", "--local")
    assert "Warning:" in r.stderr and broken in r.stderr
    html = (proj.root / "rep" / "index.html").read_text()
    assert html.count('<a class="node"') == 3 and html.count('class="edge cycle"') == 2
    page = (proj.root / "rep" / "exp" / f"{broken[:22]}.html").read_text()
    assert "broken" in page and 'class="warn"' in page
