"""What every test module uses: the scripts' folder, a script loaded by its path, and a script run
as a user runs it."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(ROOT))  # spawn workers started by a test import the scripts from here
# pytest-xdist runs a test process on each core, and a script a test starts is one more: one
# thread each keeps them from competing for the cores.
os.environ["OMP_NUM_THREADS"] = "1"


def load_script(name: str, *argv: str):
    """Load e.g. 01_model.py, a name `import` cannot spell, as module `01_model`: its top level
    runs once, with `sys.argv` as `python NAME ARGV` would set it. The module goes into
    sys.modules, so that pickle finds its classes by name, as a DataLoader worker would."""
    module_name = Path(name).stem
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        saved, sys.argv = sys.argv, [name, *argv]
        try:
            spec.loader.exec_module(module)
        finally:
            sys.argv = saved
    return sys.modules[module_name]


class Script:
    """A test module's handle on a script: `load_script` runs on the first name looked up, so a
    test process loads only the scripts its tests use (test_scripts.py imports every test module
    for its KEY_LINES)."""

    def __init__(self, name: str, *argv: str):
        self.name, self.argv = name, argv

    def __getattr__(self, attr: str):
        return getattr(load_script(self.name, *self.argv), attr)


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """`python NAME ARGS` in cwd, with deprecation and future warnings as errors."""
    command = [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning",
               str(ROOT / name), *args]
    return subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
