"""Every numbered script, run the three ways a learner runs it: as a command, imported, and
cell by cell as a notebook. Behaviour tests of each script live in test_NN_name.py."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS, run_script

# What a learner should see in each default run (regular expressions, one per line).
KEY_LINES = {
    "01_model.py": [r"^device: (cpu|cuda|mps)", r"^parameters: 131$",
                    r"^layers in a list: 0 parameters; in nn.ModuleList: 67$",
                    r"^autograd: dL/dw=12 dL/db=6", r"matches the chain rule .*: True$",
                    r"^one SGD step \| loss [\d.]+ -> [\d.]+", r"outputs identical: True$",
                    r"torch.load refused: UnpicklingError"],
    "02_dataset.py": [r"^len\(dataset\): 10$", r"^dataset\[0\]: image \(8, 8\) torch.uint8",
                      r"^dataset\[10\] -> IndexError", r"^iterated 10 samples",
                      r"^with transform=to_float: torch.float32",
                      r"^IndexStream yielded 10 samples", r"^random_split: train 8, val 2"],
}
# A bad flag per script: exit 2 and one line on stderr that names it.
BAD_INPUT = {
    "01_model.py": (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    "02_dataset.py": (["--root", "no-such-folder"], "no-such-folder: no such folder"),
}
# Lines that measure time differ between runs; the seed fixes everything else.
TIMING = re.compile(r"tokens/s")


def test_every_script_is_covered():
    assert SCRIPTS and set(SCRIPTS) == set(KEY_LINES) == set(BAD_INPUT)


def stable_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not TIMING.search(line)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_run_prints_key_lines_repeatably_and_leaves_nothing(script, tmp_path):
    outputs = []
    for run in ("first", "second"):
        cwd, tmp = tmp_path / run, tmp_path / f"{run}-tmp"
        cwd.mkdir(), tmp.mkdir()
        os.environ["TMPDIR"] = str(tmp)  # the scripts' temporary folders go here, to be checked
        try:
            result = run_script(script, cwd=cwd)
        finally:
            del os.environ["TMPDIR"]
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # no warnings, deprecations are errors
        assert list(cwd.iterdir()) == []
        # torch.optim imports torch._dynamo, which makes its own cache folder: not ours to remove
        assert [p for p in tmp.iterdir() if not p.name.startswith("torchinductor_")] == []
        outputs.append(stable_lines(result.stdout))
    for pattern in KEY_LINES[script]:
        assert any(re.search(pattern, line) for line in outputs[0]), pattern
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_line_and_exit_2(script, tmp_path):
    args, message = BAD_INPUT[script]
    result = run_script(script, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" or "Traceback" not in result.stdout
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


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


def notebook_tools():
    """jupytext and nbclient with an ipykernel; CI installs them, so only a local run skips."""
    try:
        import ipykernel  # noqa: F401
        import jupytext
        import nbclient
    except ImportError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"notebook tools not installed ({e.name}): pip install jupytext nbclient ipykernel")
    return jupytext, nbclient


@pytest.mark.parametrize("script", SCRIPTS)
def test_notebook_runs_cell_by_cell(script, tmp_path):
    jupytext, nbclient = notebook_tools()
    notebook = jupytext.read(ROOT / script)  # the "# %%" cells become notebook cells
    assert sum(cell.cell_type == "code" for cell in notebook.cells) >= 3
    assert any(cell.cell_type == "markdown" for cell in notebook.cells)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells
                      for out in cell.get("outputs", []) if out.get("name") == "stdout")
    for pattern in KEY_LINES[script]:
        assert re.search(pattern, printed, re.MULTILINE), pattern
    assert list(tmp_path.iterdir()) == []
