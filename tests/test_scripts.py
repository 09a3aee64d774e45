"""Every numbered script, run the three ways a learner runs it: as a command, imported, and
cell by cell as a notebook. Behaviour tests of each script live in test_NN_name.py."""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, SCRIPTS, run_script

# What a learner should see in each default run (regular expressions, one per line).
KEY_LINES = {
    "01_model.py": [r"^device: (cpu|cuda|mps)", r"^parameters: 131$",
                    r"^layers in a list: 0 parameters; in nn.ModuleList: 67$",
                    r"^autograd: dL/dw=12 dL/db=6", r"without zero_grad\(\): dL/dw=24 ",
                    r"matches the chain rule .*: True$",
                    r"^one SGD step \| loss [\d.]+ -> [\d.]+", r"outputs identical: True$",
                    r"torch.load refused: UnpicklingError"],
    "02_dataset.py": [r"^len\(dataset\): 10$", r"^dataset\[0\]: image \(8, 8\) torch.uint8",
                      r"^dataset\[10\] -> IndexError", r"^iterated 10 samples",
                      r"^with transform=to_float: torch.float32",
                      r"^IndexStream yielded 10 samples", r"^random_split: train 8, val 2"],
    "03_transforms.py": [r"^image: \(3, 32, 32\) torch.uint8",
                         r"closure, partial: identical output: True$",
                         r"same seed, same noise: True; next draw differs: True$",
                         r"^v2.Compose: image \(3, 24, 24\) torch.float32",
                         r"^compose\(\): identical to v2.Compose: True$",
                         r"^  class instance +pickles; the copy gives the same output: True$",
                         r"^  closure +fails: AttributeError: .*local object",
                         r"^  lambda +fails: "],
    "04_dataloader.py": [r"^device: (cpu|cuda|mps) \| workers: 2",
                         r"^epoch 2 order: \[.*\] \| each sample once: True$",
                         r"^batch: index \(4,\), x \(4, 2\), label \(4,\)$",
                         r"^batches per epoch: 3 \(the last has 2\); with drop_last=True: 2$",
                         r"same order as epoch 1: True",
                         r"^padded tokens \(T_max, B\): \(5, 4\), lengths \[3, 5, 1, 4\]",
                         r"^numpy Generator from __init__: draws by worker \{0: (\[.*\]), 1: \1\}$",
                         r"^RangeStream\(0, 8, split=True\) in 2 workers: 8 items",
                         r"disjoint: True, covering: True$"],
    "05_lstm.py": [r"^device: (cpu|cuda|mps)$", r"^tiny LSTM: \[3, 1, 2\] -> \[1, 2, 3\]",
                   r"^nll_loss\(log_softmax\) (\S+) = cross_entropy \1 \| nll_loss\(softmax\) -",
                   r"^target of shape \(3, 1\): RuntimeError: .*multi-target not supported",
                   r"^step  300 \| loss ", r"^speed: [\d,]+ tokens/s",
                   r"^next-character accuracy on the text: 100.0%$",
                   r"^loss=\d+\.\d+ accuracy=100.0%$"],
}
# A bad flag per script: exit 2 and one line on stderr that names it.
BAD_INPUT = {
    "01_model.py": (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    "02_dataset.py": (["--root", "no-such-folder"], "no-such-folder: no such folder"),
    "03_transforms.py": (["--crop", "0"], "argument --crop: must be a positive integer, got 0"),
    "04_dataloader.py": (["--num-workers", "-1"], "argument --num-workers: must be at least 0"),
    "05_lstm.py": (["--text-file", "missing.txt"], "--text-file missing.txt: no such file"),
}
# Lines that measure time differ between runs; the seed fixes everything else.
TIMING = re.compile(r"tokens/s")


def test_every_script_is_covered():
    assert SCRIPTS and set(SCRIPTS) == set(KEY_LINES) == set(BAD_INPUT)


def stable_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not TIMING.search(line)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every script's default run twice and its bad-input run, each in an empty folder with its
    own TMPDIR, two at a time: most of a run is importing torch, and 2 cores do two at once."""
    def run(script, kind):
        cwd, tmp = (tmp_path_factory.mktemp(f"{script}-{kind}{part}") for part in ("", "-tmp"))
        args = BAD_INPUT[script][0] if kind == "bad" else []
        result = run_script(script, *args, cwd=cwd, env={**os.environ, "TMPDIR": str(tmp)})
        return {"code": result.returncode, "out": result.stdout, "err": result.stderr,
                "cwd": cwd, "tmp": tmp}

    keys = [(script, kind) for script in SCRIPTS for kind in ("first", "second", "bad")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(keys, pool.map(lambda key: run(*key), keys)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_run_prints_key_lines_repeatably_and_leaves_nothing(script, runs):
    first, second = runs[script, "first"], runs[script, "second"]
    for run in (first, second):
        assert run["code"] == 0, run["err"]
        assert run["err"] == ""  # no warnings: deprecations are errors here
        assert list(run["cwd"].iterdir()) == []
        # torch.optim imports torch._dynamo, which makes its own cache folder: not ours to remove
        assert [p for p in run["tmp"].iterdir() if not p.name.startswith("torchinductor_")] == []
    lines = first["out"].splitlines()
    for pattern in KEY_LINES[script]:
        assert any(re.search(pattern, line) for line in lines), pattern
    assert stable_lines(first["out"]) == stable_lines(second["out"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_line_and_exit_2(script, runs):
    run, message = runs[script, "bad"], BAD_INPUT[script][1]
    assert run["code"] == 2
    assert run["out"] == ""
    assert run["err"].count("\n") == 1 and message in run["err"], run["err"]


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
        pytest.skip(f"notebook tools not installed ({e.name}): "
                    "pip install jupytext nbclient ipykernel")
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
