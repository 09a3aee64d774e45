"""Every numbered script, run the four ways a learner runs it: as a command, imported, cell by
cell as a notebook, and with `%run NN_name.py --flag`. What each script must print lives beside
its behaviour tests, in test_NN_name.py:
  KEY_LINES  regular expressions its default run prints, in this order (the order of its sections)
  BAD_RUN    (argv, message): bad input given as `python NN_name.py ARGV`: argparse's error
  FLAG_RUN   (argv, regex): `%run NN_name.py ARGV` must print a line the flags decide
  NOTEBOOK_KEY_LINES (optional) what a notebook prints, where it differs from KEY_LINES
The command runs in this process, where torch is imported already: a new `python` would import
it again, seconds each, six times. (06 runs as `python` processes of their own under torchrun, in
test_06_distributed.py.)
"""
import importlib
import importlib.util
import os
import re
import shlex
import tempfile
import warnings
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS, error_line, run_in_process

SPEC = {script: importlib.import_module(f"test_{Path(script).stem}") for script in SCRIPTS}
# Lines that measure time differ from run to run; torch 2.10's gloo logs "[Gloo] Rank 0 is
# connected ..." from C++ to the process's stdout, which a notebook cell does not show.
UNSTABLE = re.compile(r"tokens/s|\d s\b|^\[Gloo\] ")
ON_THE_KERNELS_WORKER = pytest.mark.xdist_group("kernel")  # the notebook runs, once
# 03 imports torchvision, a second: on the test process that imports it for the notebooks anyway
BY_SCRIPT = [pytest.param(script, marks=ON_THE_KERNELS_WORKER) if script == "03_transforms.py"
             else script for script in SCRIPTS]


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


@pytest.mark.parametrize("script", BY_SCRIPT)
def test_bad_input_is_argparses_error_and_exit_2(script, tmp_path, monkeypatch, capsys):
    argv, message = SPEC[script].BAD_RUN
    assert error_line(script, argv, monkeypatch, capsys, tmp_path).startswith(message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", BY_SCRIPT)
def test_importing_a_script_prints_and_writes_nothing(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"imported_{Path(script).stem}", ROOT / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert capsys.readouterr() == ("", "") and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    """All six scripts as notebooks, cell by cell, in one kernel (one import of torch), each
    followed by a cell `%run NN_name.py FLAG_RUN`, and `%reset -f` before each script so that
    none sees another's variables. CI installs the notebook tools; a local run may skip."""
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
        here = tmp_path_factory.mktemp("percent-run")  # for what %run writes (03: a picture)
        argv = shlex.join(SPEC[script].FLAG_RUN[0])
        run = (f"import os\nos.chdir({str(here)!r})\n%run {ROOT / script} {argv}\n"
               f"os.chdir({str(cwd)!r})")
        notebook.cells += jupytext.reads(run, "py").cells
        where[script] = (start, len(notebook.cells) - 1)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}}).execute()
    runs = {script: (notebook.cells[a:b], notebook.cells[b]) for script, (a, b) in where.items()}
    return runs, cwd


def printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.get("name") == "stdout")


def assert_no_error(cell) -> None:
    for out in cell.get("outputs", []):
        assert out.get("output_type") != "error", "\n".join(out.get("traceback", [])[-3:])
        assert out.get("name") != "stderr", out.get("text")


@ON_THE_KERNELS_WORKER
@pytest.mark.parametrize("script", SCRIPTS)
def test_as_a_command_and_as_a_notebook_it_prints_its_sections_the_same(script, kernel, tmp_path,
                                                                       short_tmp, monkeypatch,
                                                                       capfd):
    """`python NN_name.py`: exit 0, no warning, nothing left behind, its sections in order. Cell
    by cell in a notebook: a title cell first, output under each section, the same lines."""
    (tmp_path / "cwd").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # not the script's: other tests' garbage collected meanwhile, and (Python 3.12+) fork in
        # this test process, which has threads of its own (pytest-xdist's, the kernel client's)
        warnings.filterwarnings("ignore", category=ResourceWarning)
        warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork")
        run_in_process(script, [], monkeypatch, tmp_path / "cwd")
    out, err = capfd.readouterr()  # what the process wrote, C++ included
    assert ([f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught],
            err) == ([], "")
    in_order(SPEC[script].KEY_LINES, out.splitlines())
    assert list((tmp_path / "cwd").iterdir()) == [] and left_in(short_tmp) == []

    cells, _ = kernel[0][script]
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {script[:2]} - ")
    for cell in cells:
        assert_no_error(cell)
    assert sum(bool(printed(cell)) for cell in cells) >= 3  # under the sections, not at the end
    in_notebook = "".join(printed(cell) for cell in cells)
    if hasattr(SPEC[script], "NOTEBOOK_KEY_LINES"):  # 04 where workers would spawn
        in_order(SPEC[script].NOTEBOOK_KEY_LINES, in_notebook.splitlines())
    else:  # same seed, same lesson: the same lines
        assert stable(in_notebook) == stable(out)
    assert list(kernel[1].iterdir()) == []


@ON_THE_KERNELS_WORKER
@pytest.mark.parametrize("script", SCRIPTS)
def test_percent_run_honours_the_flags(script, kernel):
    """`%run NN_name.py ARGV` sets sys.argv: it prints what the flags decide, not the defaults."""
    cells, percent_run = kernel[0][script]
    assert_no_error(percent_run)
    argv, pattern = SPEC[script].FLAG_RUN
    assert re.search(pattern, printed(percent_run), re.MULTILINE), printed(percent_run)
    assert stable(printed(percent_run)) != stable("".join(printed(cell) for cell in cells))
