"""Helpers shared by the tests: import a numbered script by path, run one as a user would."""
import importlib.util
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(ROOT))  # spawn workers started by a test import the scripts from here
# Scripts run two at a time beside this process: one thread each keeps 2 cores from thrashing.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# Subprocess runs (most of each is `import torch`) start as soon as the tests are collected and
# go on in two background threads while the in-process tests run: see `early`.
POOL = ThreadPoolExecutor(max_workers=2)
SCRATCH = Path(tempfile.mkdtemp(prefix="lesson-tests-"))
EARLY: dict = {}
MADE: dict = {}


def early(first: bool = False):
    """Decorate a function that submit()s subprocess runs and returns their futures: it becomes
    a session fixture, made when the tests that use it have been collected (`first`: before the
    others, for the longest runs), so the runs overlap the tests that need no subprocess. It
    runs during collection: anything that may skip or fail belongs in the submitted function."""
    def decorate(make_runs):
        key = f"{make_runs.__module__}.{make_runs.__name__}"  # a fixture's name is per module
        EARLY[key] = (first, make_runs)

        @pytest.fixture(scope="session", name=make_runs.__name__)
        def fixture():
            return made(key)
        return fixture
    return decorate


def made(name: str):
    if name not in MADE:
        MADE[name] = EARLY[name][1]()
    return MADE[name]


def pytest_collection_finish(session):
    wanted = {f"{item.module.__name__}.{name}" for item in session.items
              for name in getattr(item, "fixturenames", ())}
    for name in sorted(wanted & set(EARLY), key=lambda name: not EARLY[name][0]):
        made(name)


def pytest_sessionfinish(session):
    POOL.shutdown(cancel_futures=True)
    shutil.rmtree(SCRATCH, ignore_errors=True)


def submit(fn, *args, **kwargs):
    return POOL.submit(fn, *args, **kwargs)


def scratch(name: str) -> Path:
    """A new empty folder for one run, removed at the end of the session."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH))


def load_script(name: str):
    """Import e.g. 01_model.py (a name `import` cannot spell). Importing runs no demo: every demo
    block sits under `if __name__ == "__main__":`. Registered in sys.modules so that pickle finds
    its classes by reference, as a DataLoader worker would."""
    module_name = Path(name).stem
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def command(name: str, *args: str) -> list[str]:
    """`python NAME ARGS`, with deprecation and future warnings turned into errors."""
    return [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning",
            str(ROOT / name), *args]


def one_thread(env=None) -> dict:
    """The environment for a script run beside others. Two processes that each spin up an
    OpenMP thread per core on a 2-core machine take seven times as long (28 s, not 4 s, for
    two 05_lstm.py runs); with one thread each they take no longer than one alone. (Output is
    the same with one thread or two.)"""
    return {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}


def run_script(name: str, *args: str, cwd: Path, env=None, timeout: float = 120):
    return subprocess.run(command(name, *args), cwd=cwd, env=one_thread(env), capture_output=True,
                          text=True, timeout=timeout)


def start_script(name: str, *args: str, cwd: Path, env=None) -> subprocess.Popen:
    """The same, started in the background (in its own process group, as a terminal starts a
    command): collect it with .communicate()."""
    return subprocess.Popen(command(name, *args), cwd=cwd, env=one_thread(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def interrupt(name: str, *args: str, after: dict[str, float], cwd: Path, env=None) -> tuple:
    """Run a script and press Ctrl-C as a terminal does (SIGINT to the script and the workers it
    started) each time it prints a line that starts with a key of `after`, that many seconds
    later. Returns its exit status, stdout and stderr."""
    process = start_script(name, *args, cwd=cwd, env=env)
    out = []
    for line in process.stdout:
        out.append(line)
        for start, seconds in after.items():
            if line.startswith(start):
                time.sleep(seconds)
                os.killpg(process.pid, signal.SIGINT)
    rest, err = process.communicate(timeout=120)
    return process.returncode, "".join(out) + rest, err


def parse_error(module, argv: list[str], capsys) -> str:
    """module.parse_args(argv) must stop as argparse does for bad input: the usage line, then one
    `prog: error: ...` line, exit status 2, no traceback. Returns the message after `error: `."""
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("usage: "), captured.err
    last = captured.err.rstrip("\n").splitlines()[-1]
    assert ": error: " in last and captured.err.count(": error: ") == 1, captured.err
    return last.split(": error: ", 1)[1]


def run_in_process(script: str, argv: list[str], monkeypatch, cwd: Path | None = None) -> None:
    """The script as `python SCRIPT ARGV` would run it (in cwd), but in this process: no second
    `import torch`. Prints go to capsys."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the script replaces it
    runpy.run_path(str(ROOT / script), run_name="__main__")
