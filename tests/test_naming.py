"""Experiment names: the 0.1.x format, the prefix clock, comment rules, identity."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from resutil.errors import ExperimentError
from resutil.naming import (
    check_comment,
    identity_of,
    make_name,
    names_in_argv,
    parse_name,
    prefix_for,
)
from resutil.workspace import Workspace

from .helpers import NAME_RE


def test_prefix_matches_resutil_0_1_examples():
    # The example in the 0.1.x README and DESIGN.md.
    assert prefix_for(datetime(2024, 7, 6, 6, 43, 39)) == "aapiyl"
    assert make_name(datetime(2024, 7, 6, 6, 43, 39), "experiment_1").name == (
        "aapiyl_20240706T064339_experiment_1"
    )


def test_prefix_is_base26_of_minutes_since_2024():
    assert prefix_for(datetime(2024, 1, 1, 0, 0, 59)) == "aaaaaa"
    assert prefix_for(datetime(2024, 1, 1, 0, 1)) == "aaaaab"
    assert prefix_for(datetime(2024, 1, 1, 0, 26)) == "aaaaba"
    minutes = int((datetime(2031, 3, 4, 5, 6) - datetime(2024, 1, 1)).total_seconds() // 60)
    digits = "".join(chr(ord("a") + (minutes // 26**i) % 26) for i in reversed(range(6)))
    assert prefix_for(datetime(2031, 3, 4, 5, 6, 7)) == digits


def test_names_sort_by_time():
    t0 = datetime(2024, 3, 1, 12, 0, 0)
    names = [make_name(t0 + timedelta(minutes=m * 37, seconds=s)).name
             for m in range(50) for s in (0, 31)]
    assert names == sorted(names)


def test_name_format_and_parse_round_trip():
    name = make_name(datetime(2025, 2, 3, 4, 5, 6), "lr 0.1 run")
    assert NAME_RE.match(name.name)
    parsed = parse_name(name.name)
    assert parsed == name
    assert parsed.identity == name.name[:22]
    assert parsed.comment == "lr 0.1 run"
    assert parse_name(name.identity).comment == ""
    for bad in ("results", "_debug", "AAPIYL_20240706T064339", "aapiyl-20240706T064339",
                "aapiy_20240706T064339", ".resutil"):
        assert parse_name(bad) is None


def test_identity_survives_a_comment_change():
    name = make_name(datetime(2024, 7, 6, 6, 43, 39), "old")
    assert name.with_comment("new").identity == name.identity
    assert identity_of("results/aapiyl_20240706T064339_old") == "aapiyl_20240706T064339"


@pytest.mark.parametrize("comment", ["a/b", "a\\b", "a:b", "a*b", "a?b", 'a"b', "a<b", "a>b",
                                     "a|b", "x" * 201, " padded", "tab\there"])
def test_invalid_comments_are_refused(comment):
    with pytest.raises(ExperimentError, match="invalid comment"):
        check_comment(comment)


@pytest.mark.parametrize("comment", ["", "experiment_1", "lr=0.1 bs=32", "日本語", "x" * 200])
def test_valid_comments(comment):
    assert check_comment(comment) == comment


def test_names_in_argv_only_inside_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    a = "aapiyl_20240706T064339_data"
    b = "aapiym_20240706T064401"
    argv = [
        f"{results}/{a}/x.csv",
        f"--input={results}/{b}",
        f"{tmp_path}/elsewhere/aapiyz_20240706T070000/x.csv",  # not under results
        f"{results}/{a}/y.csv",  # same experiment twice
        "plain-argument",
    ]
    assert names_in_argv(argv, results) == [a, b]


def test_relative_argv_paths_are_resolved_against_cwd(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    name = "aapiyl_20240706T064339"
    assert names_in_argv([f"results/{name}/x.csv"], tmp_path / "results") == [name]


def test_workspace_create_never_reuses_a_folder(tmp_path):
    ws = Workspace(tmp_path / "results")
    when = datetime(2024, 7, 6, 6, 43, 39)
    made = [ws.create("c", when).name for _ in range(5)]
    identities = {parse_name(n).identity for n in made}
    assert len(identities) == 5
    assert made[0] == "aapiyl_20240706T064339_c"
    # A different comment in the same second still gets a new identity.
    other = ws.create("d", when)
    assert other.identity not in identities


def test_workspace_create_never_reuses_an_older_identity(tmp_path):
    """Whatever the comments sort like, a later experiment gets a new identity."""
    ws = Workspace(tmp_path / "results")
    when = datetime(2024, 7, 6, 6, 43, 39)
    first = ws.create("zzz", when)
    for comment in ("aaa", "", "zzz", "mmm"):
        new = ws.create(comment, when)
        assert new.identity != first.identity
    assert len({parse_name(p.name).identity for p in (tmp_path / "results").iterdir()}) == 5
