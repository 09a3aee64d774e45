"""Helpers shared by the tests: import a numbered script by path, run one as a user would."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))


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
    two 05_lstm.py runs); with one thread each they take no longer than one alone."""
    return {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}


def run_script(name: str, *args: str, cwd: Path, env=None, timeout: float = 120):
    return subprocess.run(command(name, *args), cwd=cwd, env=one_thread(env), capture_output=True,
                          text=True, timeout=timeout)


def start_script(name: str, *args: str, cwd: Path, env=None) -> subprocess.Popen:
    """The same, started in the background: collect it with .communicate()."""
    return subprocess.Popen(command(name, *args), cwd=cwd, env=one_thread(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


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
