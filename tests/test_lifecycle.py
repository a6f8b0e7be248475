"""Every run ends on record: signals, a killed process, a full disk, Ctrl-C at each prompt
and during the final push, and commands that would pull a folder from under a live run.

Scripts run as real subprocesses; the interactive cases run on a pseudo-terminal that is
the script's controlling terminal, so a typed Ctrl-C (\\x03) becomes a real SIGINT.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resutil.capture import STDERR_LOG, STDOUT_LOG, OutputCapture

from .helpers import (
    Proj,
    assert_one_error_line,
    cli_fails,
    cli_ok,
    popen_script,
    read_exp,
    read_exp_in_zip,
    run_script,
    small_tmpfs,
    terminals,
    wait_for,
    write_script,
)

# Runs until told to stop (a file appears), after writing a result and saying so.
LOOPS = """
    import os, sys, time
    from pathlib import Path
    import resutil

    @resutil.main()
    def main(params):
        (params.ex_dir / "partial.txt").write_text("half done\\n")
        try:
            print("started", flush=True)
            Path("ready").touch()
            while not Path("go").exists():
                time.sleep(0.01)
        finally:
            (params.ex_dir / "cleanup.txt").write_text("the program's finally ran\\n")

    if __name__ == "__main__":
        main()
"""


def start_looping(proj: Proj, body: str = LOOPS, env: dict | None = None) -> subprocess.Popen:
    write_script(proj, body)
    p = popen_script(proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for((proj.root / "ready").exists, "the run to start", p)
    return p


def stop(p: subprocess.Popen) -> tuple[str, str]:
    try:
        return p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()


# -- signals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_termination_signal_ends_the_run_interrupted_and_pushed(proj, sig):
    p = start_looping(proj)
    p.send_signal(sig)
    out, err = stop(p)
    assert p.returncode == -sig  # ended by the signal, as a scheduler expects
    assert "Traceback" not in err
    folder = proj.only_exp()
    assert f"Stopped by {sig.name} - experiment {folder.name} is marked interrupted" in err
    assert (folder / "cleanup.txt").exists()  # the program unwound (its finally ran)
    meta = read_exp(folder)
    assert meta["status"] == "interrupted" and meta["ended_at"]
    pushed = read_exp_in_zip(proj.zip_of(folder.name))
    assert pushed["status"] == "interrupted"
    assert "partial.txt" in pushed["manifest"]["files"]


def test_the_programs_own_signal_handler_still_decides_and_comes_back(proj):
    write_script(proj, """
        import signal, time
        from pathlib import Path
        import resutil

        stop = []

        def mine(signum, frame):
            stop.append(signum)

        @resutil.main()
        def main(params):
            Path("ready").touch()
            while not stop:
                time.sleep(0.01)
            (params.ex_dir / "saved.txt").write_text("stopped cleanly\\n")

        signal.signal(signal.SIGTERM, mine)
        main()
        print("after the run: handler is mine:", signal.getsignal(signal.SIGTERM) is mine,
              "SIGHUP default:", signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)
    """)
    p = popen_script(proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for((proj.root / "ready").exists, "the run to start", p)
    p.send_signal(signal.SIGTERM)
    out, err = stop(p)
    assert p.returncode == 0, err  # the program chose to stop cleanly
    assert "after the run: handler is mine: True SIGHUP default: True" in out
    folder = proj.only_exp()
    assert (folder / "saved.txt").exists()
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "interrupted"


# -- a process that died without a word -----------------------------------------------------------
@pytest.mark.parametrize("how", ["SIGKILL", "os._exit", "SIGKILL after a checkpoint"])
def test_a_dead_run_shows_dead_and_push_all_pushes_it_as_interrupted(proj, how):
    if how == "SIGKILL":
        p = start_looping(proj)
        p.kill()
        stop(p)
    elif how == "SIGKILL after a checkpoint":
        p = start_looping(proj, LOOPS.replace(
            'print("started", flush=True)',
            'params.save_checkpoint()\n            (params.ex_dir / "later.txt").write_text("x")'))
        p.kill()
        stop(p)
        assert read_exp_in_zip(proj.zip_of(proj.only_exp().name))["status"] == "running"
    else:
        write_script(proj, LOOPS.replace('print("started", flush=True)', "os._exit(3)"))
        r = run_script(proj)
        assert r.returncode == 3
    folder = proj.only_exp()
    meta = read_exp(folder)
    assert meta["status"] == "running"
    assert meta["process"]["pid"] > 0 and meta["process"]["host"]

    row = json.loads(cli_ok("list", "--json").stdout)[0]
    assert (row["status"], row["liveness"]) == ("running", "dead")
    line = next(ln for ln in cli_ok("list").stdout.splitlines() if folder.name in ln)
    assert line.split()[-2:] == ["dead", folder.name]
    assert json.loads(cli_ok("show", "--json", folder.name).stdout)["status"].startswith("dead")

    r = cli_ok("push", "-A")
    said = [ln for ln in r.stderr.splitlines() if "process that is gone" in ln]
    assert len(said) == 1 and folder.name in said[0] and "interrupted" in said[0], r.stderr
    assert f"Pushed {folder.name}" in r.stderr
    local = read_exp(folder)
    assert local["status"] == "interrupted" and local["ended_at"]
    pushed = read_exp_in_zip(proj.zip_of(folder.name))
    assert pushed["status"] == "interrupted"
    assert "partial.txt" in pushed["manifest"]["files"]
    if how == "SIGKILL after a checkpoint":
        assert "later.txt" in pushed["manifest"]["files"]
    row = json.loads(cli_ok("list", "--json").stdout)[0]
    assert (row["status"], row["liveness"], row["remote"]) == ("interrupted", None, True)


def test_a_live_run_is_neither_dead_nor_pushed_by_push_all(proj):
    p = start_looping(proj)
    try:
        folder = proj.only_exp()
        assert json.loads(cli_ok("list", "--json").stdout)[0]["liveness"] == "live"
        r = cli_ok("push", "-A")
        assert f"Skipped {folder.name}: still running" in r.stderr
        assert proj.remote_zips() == []

        # comment and rm would pull the folder from under it: refused, nothing changed.
        cli_fails("comment", folder.name, "renamed", needles=["still running", "--force"])
        cli_fails("rm", folder.name, needles=["still running", "--force"])
        cli_fails("rm", "--local", folder.name[:6], needles=["still running", "--force"])
        assert proj.only_exp() == folder
        (proj.root / "go").touch()
        out, err = stop(p)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "finished"
    # Once it has ended, both work again.
    cli_ok("comment", folder.name, "renamed")
    cli_ok("rm", "--yes", folder.name[:6])
    assert proj.exp_dirs() == [] and proj.remote_zips() == []


def test_force_is_documented_for_comment_and_rm(proj):
    for cmd in ("comment", "rm"):
        options = " ".join(cli_ok(cmd, "--help").stdout.split("Options:", 1)[1].split())
        assert re.search(r"--force [^-]*still (running|writing)", options), (cmd, options)


# -- a full disk ----------------------------------------------------------------------------------
FILLS = """
    import resutil

    @resutil.main()
    def main(params):
        print("filling the disk")
        with open(params.ex_dir / "big.bin", "wb") as f:
            while True:
                f.write(b"x" * 65536)

    if __name__ == "__main__":
        main()
"""

HANDLES_IT = """
    import errno, sys
    import resutil

    @resutil.main()
    def main(params):
        try:
            with open(params.ex_dir / "big.bin", "wb") as f:
                while True:
                    f.write(b"x" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            print("disk full, carrying on")
        for i in range(1500):
            print(f"line {i} " + "y" * 100)
            print(f"err {i}", file=sys.stderr)
        print("the end")

    if __name__ == "__main__":
        main()
"""


def test_a_full_disk_while_the_run_writes_ends_it_failed_with_the_traceback(proj):
    with small_tmpfs(proj.results, "4m"):
        write_script(proj, FILLS)
        r = run_script(proj)
        assert r.returncode == 1, r.stderr  # the program's own exception, not 120
        assert "lost sys.stderr" not in r.stderr
        assert "OSError: [Errno 28]" in r.stderr  # the user's traceback, on the terminal
        folder = proj.only_exp()
        log = (folder / STDERR_LOG).read_text()
        assert "Traceback (most recent call last)" in log and "No space left on device" in log
        assert 'f.write(b"x" * 65536)' in log  # down to the user's line
        assert read_exp(folder)["status"] == "failed"
        assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "failed"


def test_a_program_that_handles_a_full_disk_is_not_broken_by_the_logs(proj):
    with small_tmpfs(proj.results, "4m"):
        write_script(proj, HANDLES_IT)
        r = run_script(proj)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "disk full, carrying on" in r.stdout and "line 1499" in r.stdout
        assert r.stdout.rstrip().endswith("the end")
        assert "err 1499" in r.stderr
        warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning:")]
        assert len(warnings) == 2, warnings  # one for each log, once
        assert all("No space left on device" in w for w in warnings)
        assert {STDOUT_LOG, STDERR_LOG} == {w.split()[3] for w in warnings}
        folder = proj.only_exp()
        assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "finished"


def test_a_run_that_starts_on_a_full_disk_is_one_line(proj):
    with small_tmpfs(proj.results, "1m"):
        with open(proj.results / "filler", "wb") as f:
            with pytest.raises(OSError) as e:
                while True:
                    f.write(b"\0" * 65536)
            assert e.value.errno == errno.ENOSPC
        write_script(proj, LOOPS)
        r = run_script(proj)
        assert r.returncode == 1
        assert_one_error_line("\n".join(ln for ln in r.stderr.splitlines()
                                        if not ln.startswith("Experiment ")),
                              "no space left", "did not run")
        assert "started" not in r.stdout
        assert proj.exp_dirs() == [] and proj.remote_zips() == []


def test_a_log_that_cannot_be_written_is_one_warning_and_the_output_still_shows(tmp_path, capsys):
    # /dev/full answers every write with ENOSPC: a real full file, no mount needed.
    for name in (STDOUT_LOG, STDERR_LOG):
        (tmp_path / name).symlink_to("/dev/full")
    told: list[str] = []
    capture = OutputCapture(tmp_path, told.append)
    capture.start()
    try:
        for i in range(100):
            print(f"out {i}")
            print(f"err {i}", file=sys.stderr)
        sys.stdout.flush()
    finally:
        capture.stop()
    shown = capsys.readouterr()
    assert "out 99" in shown.out and "err 99" in shown.err
    assert len(told) == 2 and all("No space left on device" in t for t in told)


# -- clean logs -----------------------------------------------------------------------------------
def test_logs_are_clean_text_and_hold_the_traceback(proj):
    write_script(proj, """
        import sys
        import resutil

        @resutil.main()
        def main(params):
            print("\\x1b[31mred\\x1b[0m text")
            sys.stdout.buffer.write(b"")  # what a real stream has still works
            for pct in (10, 50, 100):
                sys.stderr.write(f"\\rprogress {pct}%")
                sys.stderr.flush()
            sys.stderr.write("\\n")
            raise ValueError("boom in user code")

        if __name__ == "__main__":
            main()
    """)
    r = run_script(proj)
    assert r.returncode == 1
    folder = proj.only_exp()
    out = (folder / STDOUT_LOG).read_text()
    err = (folder / STDERR_LOG).read_text()
    assert out == "red text\n"
    assert err.startswith("progress 100%\nTraceback (most recent call last):\n")
    assert 'raise ValueError("boom in user code")' in err
    assert err.rstrip().endswith("ValueError: boom in user code")
    assert "Error: ValueError" in r.stderr  # resutil's own words stay on the terminal
    assert "Error: ValueError" not in err and "\x1b" not in err
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "failed"


# -- on a terminal: Ctrl-C and Ctrl-D ------------------------------------------------------------
@pytest.fixture
def terminal(proj):
    with terminals(proj) as make:
        yield lambda script="s.py", env=None: make([script], env)


def error_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.replace("^C", "\n").splitlines() if "Error:" in ln]


@pytest.mark.parametrize("key", [b"\x03", b"\x04"], ids=["ctrl-c", "ctrl-d"])
def test_ctrl_c_or_ctrl_d_at_the_comment_prompt(proj, terminal, key):
    write_script(proj, LOOPS)
    t = terminal()
    t.expect("Comment for this experiment")
    t.send(key)
    code = t.finish()
    assert "Traceback" not in t.plain
    [line] = error_lines(t.plain)
    if key == b"\x03":
        assert code == -signal.SIGINT
        assert "interrupted (Ctrl-C) before the run started" in line
    else:
        assert code == 1
        assert "Ctrl-D" in line and "RESUTIL_COMMENT" in line
    assert "nothing was run" in line
    assert proj.exp_dirs() == [] and proj.remote_zips() == []


def test_ctrl_c_twice_keeps_the_run_interrupted_with_clean_logs(proj, terminal):
    write_script(proj, LOOPS.replace('print("started", flush=True)',
                                     'params.save_checkpoint()\n            print("started", flush=True)'))
    t = terminal()
    t.expect("Comment for this experiment")
    t.send(b"twice\r")
    t.expect("started")
    wait_for((proj.root / "ready").exists, "the print to return", t.proc)
    t.send(b"\x03")
    t.expect("Delete the experiment folder")
    t.send(b"\x03")
    code = t.finish()
    assert code == -signal.SIGINT
    assert "Traceback" not in t.plain
    folder = proj.only_exp()
    first, second = error_lines(t.plain)
    assert first.endswith(f"Interrupted (Ctrl-C) - experiment {folder.name} is marked interrupted")
    assert f"{folder.name} is kept locally, marked interrupted" in second
    assert f"resutil push {folder.name}' later" in second
    meta = read_exp(folder)
    assert meta["status"] == "interrupted" and meta["ended_at"]
    assert (folder / "cleanup.txt").exists()
    # Not pushed (the remote holds only the checkpoint) until asked to.
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "running"
    cli_ok("push", folder.name)
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "interrupted"
    # The checkpoint's progress bar and resutil's messages were on the terminal only.
    assert "Checkpoint" in t.plain
    for log in (STDOUT_LOG, STDERR_LOG):
        text = (folder / log).read_text()
        assert "\x1b" not in text and "\r" not in text
        assert "Checkpoint" not in text and "Error" not in text and folder.name not in text
    assert (folder / STDOUT_LOG).read_text() == "started\n"


@pytest.mark.parametrize("answer, kept", [(b"y\r", False), (b"n\r", True), (b"\r", True),
                                          (b"\x04", True)], ids=["yes", "no", "enter", "ctrl-d"])
def test_the_delete_prompt_takes_the_typed_answer(proj, terminal, answer, kept):
    write_script(proj, """
        import resutil

        @resutil.main()
        def main(params):
            (params.ex_dir / "partial.txt").write_text("half done\\n")
            raise ValueError("boom")

        if __name__ == "__main__":
            main()
    """)
    t = terminal(env={"RESUTIL_COMMENT": "asked"})
    t.expect("Delete the experiment folder")
    t.send(answer)
    assert t.finish() == 1
    if not kept:
        assert proj.exp_dirs() == [] and "Deleted" in t.plain
        return
    folder = proj.only_exp()
    assert read_exp(folder)["status"] == "failed" and (folder / "partial.txt").exists()
    if answer == b"\x04":  # no answer: kept, and not pushed until asked to
        assert f"{folder.name} is kept locally, marked failed" in t.plain
        assert not proj.zip_of(folder.name).exists()
    else:
        assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "failed"


_WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}


def _blocked_writing_to(pid: int, fd: int) -> bool:
    """Whether ``pid``'s main thread sits in write(fd, ...) (from /proc/PID/syscall)."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return (len(fields) > 1 and fields[0] == str(_WRITE_SYSCALL[platform.machine()])
            and int(fields[1], 16) == fd)


def test_ctrl_c_during_the_final_push_is_one_line_and_keeps_the_run(proj, terminal):
    if platform.machine() not in _WRITE_SYSCALL:
        pytest.skip("needs to know the write syscall's number on this machine")
    write_script(proj, LOOPS)
    t = terminal(env={"RESUTIL_COMMENT": "pushing"})
    t.expect("started")
    wait_for((proj.root / "ready").exists, "the print to return", t.proc)
    try:
        Path(f"/proc/{t.proc.pid}/syscall").read_text()
    except OSError:
        pytest.skip("cannot read /proc/PID/syscall here")
    # Ctrl-S stops the terminal's output: the push's first progress output then waits
    # there, and the Ctrl-C lands in the push for sure.
    t.send(b"\x13")
    (proj.root / "go").touch()
    wait_for(lambda: _blocked_writing_to(t.proc.pid, 2), "the push to draw its progress", t.proc)
    t.send(b"\x03")
    code = t.finish()
    assert code == -signal.SIGINT
    assert "Traceback" not in t.plain
    folder = proj.only_exp()
    said = [ln for ln in t.plain.splitlines() if "push interrupted" in ln]
    assert len(said) == 1, t.plain
    assert f"{folder.name} is kept locally, marked finished" in said[0]
    assert f"run 'resutil push {folder.name}' later" in said[0]
    assert read_exp(folder)["status"] == "finished"
    assert proj.remote_zips() == []  # all or nothing
    cli_ok("push", folder.name)
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "finished"


def test_a_terminal_that_closes_ends_the_run_interrupted_and_pushed(proj, terminal):
    write_script(proj, LOOPS)
    t = terminal(env={"RESUTIL_COMMENT": "hangup"})
    t.expect("started")
    wait_for((proj.root / "ready").exists, "the print to return", t.proc)
    os.close(t.master)  # the window is closed: the kernel sends SIGHUP
    t.master = os.open("/dev/null", os.O_RDONLY)  # (closed again by the fixture)
    assert t.proc.wait(timeout=60) == -signal.SIGHUP
    folder = proj.only_exp()
    assert (folder / "cleanup.txt").exists()
    assert read_exp(folder)["status"] == "interrupted"
    assert read_exp_in_zip(proj.zip_of(folder.name))["status"] == "interrupted"


# -- the lifecycle without its front end ----------------------------------------------------------
# Runs resutil.lifecycle.Run with a listener that notes what it is told, counting the writes
# of resutil-exp.yaml (by the status each one records).
BARE = """
    import json, sys
    from pathlib import Path
    import yaml
    import resutil.metadata as m
    from resutil.lifecycle import Run, RunListener

    writes = []
    _write = m.write_atomic

    def counted(path, data):
        if Path(path).name == m.EXP_FILE:
            writes.append(yaml.safe_load(data)["status"])
        return _write(path, data)

    m.write_atomic = counted

    class Heard(RunListener):
        def __init__(self):
            self.heard = []

        def started(self, name, uncommitted):
            self.heard.append("started")

        def checkpoint(self, name):
            self.heard.append("checkpoint")

        def pushed(self, name, where):
            self.heard.append("pushed")

        def done(self, folder):
            self.heard.append("done")

    listener = Heard()
    run = Run(listener, comment="bare")
    run.start()
    (run.folder / "r.txt").write_text("42")
    if "checkpoint" in sys.argv:
        run.checkpoint()
    assert run.end(None) is False
    print(json.dumps({"writes": writes, "heard": listener.heard}))
"""


@pytest.mark.parametrize("how", ["pushed", "not pushed", "a checkpoint"])
def test_the_lifecycle_says_nothing_itself_and_writes_each_record_once(proj, how):
    write_script(proj, BARE)
    r = run_script(proj, args=["checkpoint"] if how == "a checkpoint" else [],
                   env={"RESUTIL_NO_REMOTE": "1"} if how == "not pushed" else None)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # only a front end speaks
    said = json.loads(r.stdout.splitlines()[-1])
    # The first record (its process), the start, the end, the seal (the manifest); a
    # checkpoint with nothing new to record adds only its push's seal.
    expected = {
        "pushed": (["running", "running", "finished", "finished"], ["started", "pushed", "done"]),
        "not pushed": (["running", "running", "finished", "finished"], ["started", "done"]),
        "a checkpoint": (["running", "running", "running", "finished", "finished"],
                         ["started", "checkpoint", "pushed", "done"]),
    }[how]
    assert (said["writes"], said["heard"]) == expected
    folder = proj.only_exp()
    assert read_exp(folder)["status"] == "finished" and read_exp(folder)["manifest"]
    assert proj.remote_zips() == ([] if how == "not pushed" else [f"{folder.name}.zip"])
