"""Helpers every test module uses: import a numbered script by path, run one as a user would."""
import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(ROOT))  # spawn workers started by a test import the scripts from here
# pytest-xdist runs two test processes on two cores, and each script a test starts is a third:
# one thread each keeps them from thrashing (the output is the same with one thread or two).
os.environ["OMP_NUM_THREADS"] = "1"


def load_script(name: str):
    """Import e.g. 01_model.py, a name `import` cannot spell, as module `01_model`. It is put in
    sys.modules so that pickle finds its classes by name, as a DataLoader worker would."""
    module_name = Path(name).stem
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / name)
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """`python NAME ARGS` in cwd, with deprecation and future warnings as errors."""
    command = [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning",
               str(ROOT / name), *args]
    return subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(name: str, argv: list[str], monkeypatch, cwd: Path | None = None) -> None:
    """The script as `python NAME ARGV` runs it, but in this process, where torch is imported
    already. What it prints goes to capsys."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(ROOT / name), run_name="__main__")


def error_line(name: str, argv: list[str], monkeypatch, capsys, cwd: Path | None = None) -> str:
    """Run the script with bad input: it must stop as argparse does (the usage, one `error:`
    line, exit 2, no traceback). Returns the message after `error: `."""
    with pytest.raises(SystemExit) as stopped:
        run_in_process(name, argv, monkeypatch, cwd)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("usage: ") and "Traceback" not in err, err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"{name}: error: ") and err.count("error: ") == 1, err
    return last.removeprefix(f"{name}: error: ")


def ctrl_c_at_step(monkeypatch, optimizer: type, n: int) -> None:
    """The n-th `step()` of this optimizer class raises KeyboardInterrupt, as a Ctrl-C would."""
    step, calls = optimizer.step, []

    def step_until_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)
    monkeypatch.setattr(optimizer, "step", step_until_ctrl_c)
