"""What a run copies of its code into ``uncommited_files/``: changed tracked files, but never
a symlink's target, never a file git ignores (even one tracked before it was ignored). Real
git repositories, real runs of a decorated script."""

from __future__ import annotations

import zipfile

from .helpers import git, make_project, read_exp, run_script, tree, write_script

SCRIPT = """
    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "out.txt").write_text("done\\n")

    main()
"""
SECRET = "TOP-SECRET-VALUE"


def _run(proj) -> tuple[dict, set[str], list[bytes]]:
    """Run the script; the metadata, the copied files and the archive's member contents."""
    r = run_script(proj, "s.py")
    assert r.returncode == 0, r.stderr
    folder = proj.only_exp()
    with zipfile.ZipFile(proj.zip_of(folder.name)) as zf:
        contents = [zf.read(n) for n in zf.namelist()]
    return read_exp(folder), tree(folder / "uncommited_files"), contents


def test_a_tracked_symlink_never_carries_content_from_outside(tmp_path):
    proj = make_project(tmp_path, git=True)
    write_script(proj, SCRIPT)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text(SECRET + "\n")
    (outside / "settings.py").write_text(SECRET + "\n")
    (proj.root / "data.txt").write_text("inside\n")
    (proj.root / "link").symlink_to("data.txt")
    (proj.root / "conf").mkdir()
    (proj.root / "conf" / "settings.py").write_text("DEBUG = False\n")
    (proj.root / "lib.py").write_text("X = 1\n")
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-q", "-m", "initial")
    # The tracked link now points outside; a tracked folder is now a link to outside.
    (proj.root / "link").unlink()
    (proj.root / "link").symlink_to(outside / "id_rsa")
    (proj.root / "conf" / "settings.py").unlink()
    (proj.root / "conf").rmdir()
    (proj.root / "conf").symlink_to(outside)
    (proj.root / "lib.py").write_text("X = 2\n")  # an ordinary change is still copied
    assert "link" in git(proj.root, "diff", "--name-only")

    meta, copied, contents = _run(proj)
    assert meta["git"]["uncommited_files"] == ["lib.py"]
    assert copied == {"lib.py"}
    assert all(SECRET.encode() not in c for c in contents)


def test_files_git_ignores_are_never_copied_even_if_tracked(tmp_path):
    proj = make_project(tmp_path, git=True)
    write_script(proj, SCRIPT)
    (proj.root / ".env").write_text("API_KEY=old\n")
    (proj.root / "secrets.yaml").write_text("token: old\n")
    (proj.root / "config").mkdir()
    (proj.root / "config" / "local.ini").write_text("password = old\n")
    (proj.root / "lib.py").write_text("X = 1\n")
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-q", "-m", "tracked before they were ignored")
    (proj.root / ".gitignore").write_text(".env\nsecrets.yaml\n")
    (proj.root / "config" / ".gitignore").write_text("local.ini\n")
    (proj.root / ".env").write_text(f"API_KEY={SECRET}\n")
    (proj.root / "secrets.yaml").write_text(f"token: {SECRET}\n")
    (proj.root / "config" / "local.ini").write_text(f"password = {SECRET}\n")
    git(proj.root, "add", "secrets.yaml")  # staged too
    (proj.root / "lib.py").write_text("X = 2\n")
    changed = git(proj.root, "diff", "HEAD", "--name-only").split()
    assert {".env", "secrets.yaml", "config/local.ini"} <= set(changed)

    meta, copied, contents = _run(proj)
    assert meta["git"]["uncommited_files"] == ["lib.py"]
    assert copied == {"lib.py"}
    assert all(SECRET.encode() not in c for c in contents)
