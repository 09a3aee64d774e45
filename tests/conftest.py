"""Helpers shared by the tests: import a numbered script by path, run one as a user would."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))


def load_script(name: str):
    """Import e.g. 01_model.py (a name `import` cannot spell), registered in sys.modules so that
    pickle finds its classes by reference, as a DataLoader worker would."""
    module_name = Path(name).stem
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python NAME ARGS` in cwd, with our deprecations turned into errors."""
    cmd = [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning",
           str(ROOT / name), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def main_error(module, argv, capsys) -> str:
    """Call module.main(argv), expect bad-input exit 2, return the one line it wrote to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
