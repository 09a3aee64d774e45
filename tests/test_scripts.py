"""Every numbered script, run the four ways a learner runs it: as a command, imported, cell by
cell as a notebook, and with `%run NN_name.py --flag` in IPython. (Ctrl-C is tested in
test_02_dataset.py, and during training in 04 and 05.) What each script must print lives beside
its behaviour tests, in test_NN_name.py:
  KEY_LINES  regular expressions its default run prints, in this order (the order of its sections)
  BAD_RUN    (argv, text): one bad input, run as `python` runs it: exit 2, argparse's error
  FLAG_RUN   (argv, regex): a flag that changes a printed line, for the %run test
  BAD_FLAGS  [(argv, message start), ...]: bad input that parse_args must refuse as argparse does
  NOTEBOOK_KEY_LINES (optional) what a notebook run prints, where it differs from KEY_LINES
"""
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import (
    ROOT,
    SCRIPTS,
    early,
    load_script,
    one_thread,
    parse_error,
    run_in_process,
    run_script,
    scratch,
    submit,
)


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


def run(script: str, args: list[str]) -> dict:
    """`python SCRIPT ARGS` in an empty folder with its own TMPDIR."""
    cwd, tmp = scratch(script), scratch(f"{script}-tmp")
    result = run_script(script, *args, cwd=cwd, env={**os.environ, "TMPDIR": str(tmp)})
    return {"code": result.returncode, "out": result.stdout, "err": result.stderr,
            "cwd": cwd, "tmp": tmp}


BAD_FLAGS = [(script, argv, message) for script in SPEC for argv, message in SPEC[script].BAD_FLAGS]
SEEDS = [(script, seed) for script in SCRIPTS for seed in ("-1", str(2**32), "1.5")]


@pytest.mark.parametrize("script, argv, message", BAD_FLAGS)
def test_bad_flags_are_argparse_errors(script, argv, message, capsys):
    assert parse_error(load_script(script), argv, capsys).startswith(message)


@pytest.mark.parametrize("script, seed", SEEDS)
def test_a_seed_is_what_torch_and_numpy_accept(script, seed, capsys):
    """Every script's --seed is an integer in 0..2**32-1: torch.manual_seed, torch.Generator and
    numpy's default_rng all take it (a negative seed or one of 2**64 crashed numpy or torch)."""
    message = parse_error(load_script(script), ["--seed", seed], capsys)
    assert message in (f"argument --seed: must be in 0..4294967295, got {seed}",
                       f"argument --seed: invalid integer value: '{seed}'")
    assert load_script(script).parse_args(["--seed", str(2**32 - 1)]).seed == 2**32 - 1


@pytest.mark.parametrize("script", ["01_model.py", "04_dataloader.py", "05_lstm.py"])
@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_a_device_that_is_not_there_is_named(script, device, monkeypatch, capsys):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert parse_error(load_script(script), ["--device", device], capsys) == (
        f"--device {device}: not available on this machine")


@early()
def runs():
    """Every script's default run."""
    return {(script, "default"): submit(run, script, []) for script in SPEC}


def assert_left_nothing(run) -> None:
    assert list(run["cwd"].iterdir()) == []
    # torch.optim imports torch._dynamo, which makes its own cache folder: not ours to remove
    assert [p for p in run["tmp"].iterdir() if not p.name.startswith("torchinductor_")] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_run_prints_its_sections_in_order_and_leaves_nothing(script, runs):
    run = runs[script, "default"].result()
    assert run["code"] == 0, run["err"]
    assert run["err"] == ""  # no warnings: deprecations are errors here
    assert_left_nothing(run)
    in_order(SPEC[script].KEY_LINES, run["out"].splitlines())


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_argparses_error_and_exit_2(script, tmp_path, monkeypatch, capsys):
    """The whole script, as `python SCRIPT ARGV` runs it, in this process (the default runs
    above are subprocesses: this one stops in parse_args)."""
    argv, message = SPEC[script].BAD_RUN
    monkeypatch.setattr(tempfile, "tempdir", str(scratch(f"{script}-tmp")))
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(script, argv, monkeypatch, tmp_path)
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (2, ""), err
    assert err.startswith("usage: ") and "Traceback" not in err
    assert err.rstrip("\n").splitlines()[-1] == f"{script}: error: {message}"
    assert list(tmp_path.iterdir()) == [] and list(Path(tempfile.gettempdir()).iterdir()) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_a_script_prints_and_writes_nothing(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"imported_{Path(script).stem}", ROOT / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert capsys.readouterr() == ("", "")
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


def run_notebooks() -> dict:
    """All six scripts as notebooks, cell by cell, in one kernel (one `import torch`), with
    `%reset -f` between them so that none sees another's variables. VS Code's Interactive
    Window sets __file__ while sys.argv is the kernel's; each notebook does too here: its flags
    must still come only from `python` or `%run`, so a notebook gets the defaults."""
    jupytext, nbclient = notebook_tools()
    notebook, where = jupytext.reads("", "py"), {}
    for script in SCRIPTS:
        cells = jupytext.read(ROOT / script).cells
        setup = jupytext.reads(f"%reset -f\n__spec__ = None  # as in a new kernel; reset drops it"
                               f"\n__file__ = {str(ROOT / script)!r}", "py").cells
        start = len(notebook.cells) + len(setup)
        notebook.cells += setup + cells
        where[script] = (start, len(notebook.cells))
    cwd = scratch("notebooks")
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return {script: notebook.cells[a:b] for script, (a, b) in where.items()}, cwd


@early(first=True)
def notebooks():
    return submit(run_notebooks)


@pytest.mark.parametrize("script", SCRIPTS)
def test_notebook_starts_with_a_title_and_prints_under_each_section(script, notebooks, runs):
    cells, cwd = notebooks.result()
    cells = cells[script]
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {script[:2]} - ")
    outputs = [out for cell in cells for out in cell.get("outputs", [])]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, errors[0].get("traceback", [])[-1:]
    assert not [out for out in outputs if out.get("name") == "stderr"]
    printed = ["".join(out.get("text", "") for out in cell.get("outputs", [])
                       if out.get("name") == "stdout") for cell in cells]
    assert sum(bool(text) for text in printed) >= 3  # output under the sections, not at the end
    spec = SPEC[script]
    in_order(getattr(spec, "NOTEBOOK_KEY_LINES", spec.KEY_LINES), "".join(printed).splitlines())
    if not hasattr(spec, "NOTEBOOK_KEY_LINES"):  # same seed, same lesson: the same lines
        default_run = runs[script, "default"].result()["out"]
        assert stable_lines("".join(printed)) == stable_lines(default_run)
    assert list(cwd.iterdir()) == []


def percent_run():
    lines = [f"%run {ROOT / script} {' '.join(SPEC[script].FLAG_RUN[0])}" for script in SPEC]
    cwd = scratch("percent-run")
    result = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner",
                             "--colors=nocolor", "-c", "\n".join(lines)], cwd=cwd,
                            env=one_thread(), capture_output=True, text=True, timeout=300)
    return result, cwd


@early()
def percent_runs():
    return submit(percent_run)


def test_percent_run_in_ipython_honours_the_flags(percent_runs):
    """`%run NN_name.py --flag` sets sys.argv, so the flags reach parse_args."""
    pytest.importorskip("IPython")
    result, cwd = percent_runs.result()
    assert result.returncode == 0, result.stdout + result.stderr
    for script in SPEC:
        pattern = SPEC[script].FLAG_RUN[1]
        assert re.search(pattern, result.stdout, re.MULTILINE), (script, pattern)
    assert list(cwd.iterdir()) == []
