"""Every numbered script, run the four ways a learner runs it: as a command, imported, cell by
cell as a notebook, and with `%run NN_name.py --flag` in IPython. What each script must print
lives beside its behaviour tests, in test_NN_name.py:
  KEY_LINES  regular expressions its default run prints, in this order (the order of its sections)
  BAD_RUN    (argv, text): one bad input, run end to end: exit 2, argparse's error naming it
  FLAG_RUN   (argv, regex): a flag that changes a printed line, for the %run test
  NOTEBOOK_KEY_LINES (optional) what a notebook run prints, where it differs from KEY_LINES
"""
import importlib
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS, one_thread, run_script, start_script


def spec_of(script: str):
    try:
        return importlib.import_module(f"test_{Path(script).stem}")
    except ImportError:  # reported by test_every_script_has_a_test_module_with_its_key_lines
        return None


SPEC = {script: module for script in SCRIPTS if (module := spec_of(script))}
# Lines that measure time differ between runs; the seed fixes everything else.
TIMING = re.compile(r"tokens/s|seconds|\d s\b")


def stable_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not TIMING.search(line)]


def in_order(patterns: list[str], lines: list[str]) -> None:
    """Each pattern matches a line after the line the previous one matched."""
    at = 0
    for pattern in patterns:
        hits = [i for i in range(at, len(lines)) if re.search(pattern, lines[i])]
        assert hits, f"{pattern!r} not printed after line {at}:\n" + "\n".join(lines)
        at = hits[0] + 1


def test_every_script_has_a_test_module_with_its_key_lines():
    assert len(SCRIPTS) == 6 and set(SPEC) == set(SCRIPTS)
    for script, spec in SPEC.items():
        assert spec.KEY_LINES and spec.BAD_RUN and spec.FLAG_RUN, script


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every script's default run twice and its bad-input run, each in an empty folder with its
    own TMPDIR, two at a time: most of a run is importing torch, and 2 cores do two at once."""
    def run(script, kind):
        cwd, tmp = (tmp_path_factory.mktemp(f"{script}-{kind}{part}") for part in ("", "-tmp"))
        args = SPEC[script].BAD_RUN[0] if kind == "bad" else []
        result = run_script(script, *args, cwd=cwd, env={**os.environ, "TMPDIR": str(tmp)})
        return {"code": result.returncode, "out": result.stdout, "err": result.stderr,
                "cwd": cwd, "tmp": tmp}

    keys = [(script, kind) for script in SPEC for kind in ("first", "second", "bad")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(keys, pool.map(lambda key: run(*key), keys)))


def assert_left_nothing(run) -> None:
    assert list(run["cwd"].iterdir()) == []
    # torch.optim imports torch._dynamo, which makes its own cache folder: not ours to remove
    assert [p for p in run["tmp"].iterdir() if not p.name.startswith("torchinductor_")] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_run_prints_its_sections_in_order_repeatably_and_leaves_nothing(script, runs):
    first, second = runs[script, "first"], runs[script, "second"]
    for run in (first, second):
        assert run["code"] == 0, run["err"]
        assert run["err"] == ""  # no warnings: deprecations are errors here
        assert_left_nothing(run)
    in_order(SPEC[script].KEY_LINES, first["out"].splitlines())
    assert stable_lines(first["out"]) == stable_lines(second["out"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_argparses_error_and_exit_2(script, runs):
    run, message = runs[script, "bad"], SPEC[script].BAD_RUN[1]
    assert (run["code"], run["out"]) == (2, ""), run["err"]
    assert run["err"].startswith("usage: ") and "Traceback" not in run["err"]
    assert run["err"].rstrip("\n").splitlines()[-1] == f"{script}: error: {message}"
    assert_left_nothing(run)


def test_importing_a_script_prints_and_writes_nothing(tmp_path):
    code = ("import importlib.util, sys\n"
            "for path in sys.argv[1:]:\n"
            "    spec = importlib.util.spec_from_file_location('m', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    result = subprocess.run([sys.executable, "-c", code, *(str(ROOT / s) for s in SCRIPTS)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_outside_training_is_one_line_and_no_traceback(tmp_path):
    """01 is interrupted in the middle of its lesson (after its first line). Python ends a
    program that a Ctrl-C stopped by SIGINT itself, which a shell reports as status 130."""
    process = start_script("01_model.py", cwd=tmp_path)
    assert process.stdout.readline().startswith("device: ")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), err
    assert err == "interrupted\n"
    assert list(tmp_path.iterdir()) == []


def notebook_tools():
    """jupytext and nbclient with an ipykernel; CI installs them, so only a local run skips."""
    try:
        import ipykernel  # noqa: F401
        import jupytext
        import nbclient
    except ImportError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"notebook tools not installed ({e.name}): "
                    "pip install jupytext nbclient ipykernel")
    return jupytext, nbclient


@pytest.mark.parametrize("script", SCRIPTS)
def test_notebook_starts_with_a_title_and_prints_under_each_section(script, tmp_path):
    jupytext, nbclient = notebook_tools()
    notebook = jupytext.read(ROOT / script)  # the "# %%" cells become notebook cells
    title = notebook.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {script[:2]} - ")
    # VS Code's Interactive Window sets __file__ while sys.argv is the kernel's: flags must
    # still come only from `python` or `%run`, so a notebook gets the defaults.
    notebook.cells.insert(1, jupytext.reads(f"__file__ = {str(ROOT / script)!r}", "py").cells[0])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = ["".join(out.get("text", "") for out in cell.get("outputs", [])
                       if out.get("name") == "stdout") for cell in notebook.cells]
    assert not any(out.get("output_type") == "error" or out.get("name") == "stderr"
                   for cell in notebook.cells for out in cell.get("outputs", []))
    assert sum(bool(text) for text in printed) >= 3  # output under the sections, not at the end
    key_lines = getattr(SPEC[script], "NOTEBOOK_KEY_LINES", SPEC[script].KEY_LINES)
    in_order(key_lines, "".join(printed).splitlines())
    assert list(tmp_path.iterdir()) == []


def test_percent_run_in_ipython_honours_the_flags(tmp_path):
    """`%run NN_name.py --flag` sets __file__ and sys.argv, so the flags reach parse_args."""
    pytest.importorskip("IPython")
    lines = [f"%run {ROOT / script} {' '.join(SPEC[script].FLAG_RUN[0])}" for script in SPEC]
    result = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner",
                             "--colors=nocolor", "-c", "\n".join(lines)], cwd=tmp_path,
                            env=one_thread(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in SPEC:
        pattern = SPEC[script].FLAG_RUN[1]
        assert re.search(pattern, result.stdout, re.MULTILINE), (script, pattern)
    assert list(tmp_path.iterdir()) == []
