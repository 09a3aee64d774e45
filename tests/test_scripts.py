"""Smoke tests: every numbered script run as `python NN_name.py` and cell by cell as a notebook.
What each must print lives beside its behaviour tests, in test_NN_name.py:
  KEY_LINES           regular expressions its default run prints, in this order
  NOTEBOOK_KEY_LINES  (optional) what its notebook prints, where that differs from KEY_LINES
The command runs in this process, where torch is imported already (a new `python` would import it
again, seconds each). 06 also runs under torchrun, in test_06_distributed.py.
"""
import importlib
import os
import re
import runpy
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS

SPEC = {script: importlib.import_module(f"test_{Path(script).stem}") for script in SCRIPTS}
# Lines that measure time differ from run to run; torch 2.10's gloo logs "[Gloo] Rank 0 is
# connected ..." from C++ to the process's stdout, which a notebook cell does not show.
UNSTABLE = re.compile(r"tokens/s|\d s\b|^\[Gloo\] ")
ON_THE_KERNELS_WORKER = pytest.mark.xdist_group("kernel")


def stable(text: str) -> list[str]:
    return [line for line in text.splitlines() if not UNSTABLE.search(line)]


def in_order(patterns: list[str], lines: list[str]) -> None:
    """Each pattern matches a line after the line the previous one matched."""
    at = 0
    for pattern in patterns:
        hits = [i for i in range(at, len(lines)) if re.search(pattern, lines[i])]
        assert hits, f"{pattern!r} not printed after line {at}:\n" + "\n".join(lines)
        at = hits[0] + 1


def left_in(folder: Path) -> list[Path]:
    # torch.optim imports torch._dynamo, which makes a cache folder of its own: not the script's
    return [p for p in folder.iterdir() if not p.name.startswith("torchinductor_")]


@pytest.fixture
def short_tmp(monkeypatch):
    """The temporary folder, with a short path: a DataLoader worker shares tensors through a
    socket made in it, whose path (AF_UNIX) may have 107 bytes, which pytest's tmp_path can pass
    (the worker's sending thread fails, and the loader waits for ever)."""
    with tempfile.TemporaryDirectory(prefix="t") as folder:
        monkeypatch.setattr(tempfile, "tempdir", folder)
        yield Path(folder)


def test_the_six_scripts_each_have_a_test_module():
    assert [s[:3] for s in SCRIPTS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_as_a_command_it_prints_its_key_lines_and_leaves_nothing(script, tmp_path, short_tmp,
                                                                monkeypatch, capfd):
    """`python NN_name.py` in an empty folder: no error, no warning, its lines in order."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # not the script's: other tests' garbage collected meanwhile, and (Python 3.12+) fork in
        # this test process, which has threads of its own (pytest-xdist's)
        warnings.filterwarnings("ignore", category=ResourceWarning)
        warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork")
        runpy.run_path(str(ROOT / script), run_name="__main__")
    out, err = capfd.readouterr()  # what the process wrote, C++ included
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []
    assert err == ""
    in_order(SPEC[script].KEY_LINES, out.splitlines())
    assert list(tmp_path.iterdir()) == [] and left_in(short_tmp) == []


@pytest.fixture(scope="session")
def notebooks(tmp_path_factory):
    """All six scripts as notebooks, cell by cell, in one kernel (one import of torch), with
    `%reset -f` before each so that none sees another's variables. CI installs the notebook
    tools; a local run without them skips."""
    try:
        import jupytext
        import nbclient
    except ImportError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"notebook tools missing: pip install jupytext nbclient ipykernel ({e.name})")
    notebook, where, cwd = jupytext.reads("", "py"), {}, tmp_path_factory.mktemp("kernel")
    for script in SCRIPTS:
        # a new kernel has a __spec__ of None, which %reset takes away
        notebook.cells += jupytext.reads("%reset -f\n__spec__ = None", "py").cells
        start = len(notebook.cells)
        notebook.cells += jupytext.read(ROOT / script).cells
        where[script] = (start, len(notebook.cells))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return {script: notebook.cells[a:b] for script, (a, b) in where.items()}, cwd


def printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.get("name") == "stdout")


@ON_THE_KERNELS_WORKER
@pytest.mark.parametrize("script", SCRIPTS)
def test_as_a_notebook_it_prints_under_each_section_what_the_command_prints(script, notebooks):
    """A title cell first, no error and nothing on stderr in any cell, output under the sections
    (not all at the end), and the command's lines: same seed, same lesson."""
    cells, cwd = notebooks[0][script], notebooks[1]
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {script[:2]} - ")
    for cell in cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", "\n".join(out.get("traceback", [])[-3:])
            assert out.get("name") != "stderr", out.get("text")
    assert sum(bool(printed(cell)) for cell in cells) >= 3
    in_notebook = "".join(printed(cell) for cell in cells)
    in_order(getattr(SPEC[script], "NOTEBOOK_KEY_LINES", SPEC[script].KEY_LINES),
             in_notebook.splitlines())
    assert list(cwd.iterdir()) == []
