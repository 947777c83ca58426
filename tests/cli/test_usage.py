"""Usage errors print the usage line and exit 2; -h is --help; Ctrl-C prints one line and exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli._run import run

LLM4REC = Path(sys.executable).with_name("llm4rec")  # the installed entry point of this environment


def installed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLM4REC), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


@pytest.mark.parametrize("command", [[], ["evaluate"], ["quickstart"], ["embed"], ["ope"], ["simulate"], ["data"],
                                     ["data", "info"], ["data", "convert"], ["data", "fetch"], ["data", "list"]])
def test_dash_h_is_help_everywhere(capsys, command):
    code, out, _ = run(capsys, *command, "-h")
    assert code == 0 and "Usage" in out and "--help" in out


@pytest.mark.parametrize(("args", "usage", "error"), [
    (["evaluate", "--data", "x.csv", "--model", "ease", "--seed", "abc"], "llm4rec evaluate",
     "Invalid value for '--seed'"),
    (["evaluate"], "llm4rec evaluate", "Missing option '--data'"),
    (["evaluate", "--dat", "x.csv"], "llm4rec evaluate", "No such option: --dat"),
    (["quickstart", "--modles", "pop"], "llm4rec quickstart", "No such option: --modles"),
    (["evaluat"], "llm4rec", "No such command 'evaluat'"),
    (["data", "info"], "llm4rec data info", "Missing argument"),
    (["ope", "--logs", "x", "--policy", "uniform", "--bootstrap", "-1"], "llm4rec ope", "Invalid value"),
])
def test_usage_errors_print_the_usage_line_and_exit_2(capsys, args, usage, error):
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith(f"Usage: {usage} ") and f"Try '{usage} -h' for help." in err, err
    assert error in err and "unexpected" not in err and "Traceback" not in err


def test_bare_command_prints_the_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "Usage: llm4rec" in out and "quickstart" in out and "unexpected" not in out + err


def test_the_installed_command_exits_2_on_usage_errors_and_0_on_help():
    bare, help_, wrong = installed(), installed("-h"), installed("evaluate", "--dat", "x")
    assert bare.returncode == 2 and "Usage: llm4rec" in bare.stdout
    assert help_.returncode == 0 and "Usage: llm4rec" in help_.stdout
    assert wrong.returncode == 2 and "No such option: --dat" in wrong.stderr and "unexpected" not in wrong.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the command start its work")
def test_ctrl_c_prints_one_line_and_exits_130():
    """SIGINT in the middle of a command (polars is loaded only once the command runs, not at import)."""
    proc = subprocess.Popen([str(LLM4REC), "quickstart", "--models", "als,bpr,als,bpr,als,bpr"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while "polars" not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "the command ended before its work started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and out == ""
