"""02_dataset.py: a lazy map-style Dataset over a folder, iteration, transform, stream, split,
and one argparse error naming the file for every kind of damage a folder can have."""
import io
import os
import signal
import zipfile

import numpy as np
import pytest
import torch

from conftest import early, interrupt, load_script, parse_error, run_in_process, scratch, submit

m = load_script("02_dataset.py")

KEY_LINES = [r"^index.csv starts: \['file,label', 'images/0000.npy,\d', 'images/0001.npy,\d'\]$",
             r"^len\(dataset\): 10$", r"^dataset\[0\]: image \(8, 8\) torch.uint8, label \d$",
             r"^dataset\[-1\] is dataset\[9\]: True$",
             r"^dataset\[10\]: IndexError: list index out of range$",
             r"^for sample in dataset: 10 samples, then it stops$",
             r"^WrapAround: still going after 30 samples$",
             r"^with transform=to_float: torch.float32, min 0.\d+, max 0.\d+$",
             r"^FolderStream yields the same samples as FolderDataset: True$",
             r"^len\(stream\): TypeError: object of type 'FolderStream' has no len\(\)$",
             r"^random_split: train 8, val 2, val indices \[\d, \d\]$",
             r"^  same seed, same split: True$"]
BAD_RUN = (["--root", "no-such-folder"], "--root no-such-folder: no such folder")
FLAG_RUN = (["--num-samples", "25"], r"^random_split: train 20, val 5, ")


@pytest.fixture
def folder(tmp_path):
    m.write_example_folder(tmp_path, num_samples=6, seed=0)
    return tmp_path


def test_len_and_sample_are_what_the_files_hold(folder):
    dataset = m.FolderDataset(folder)
    assert len(dataset) == 6
    sample = dataset[2]
    stored = np.load(folder / "images" / "0002.npy")
    assert set(sample) == {"image", "label"}
    assert sample["image"].shape == (8, 8) and sample["image"].dtype == torch.uint8
    assert torch.equal(sample["image"], torch.from_numpy(stored))
    assert sample["label"] == int(stored.mean() > 127.5)


def test_negative_index_counts_from_the_end_and_past_the_end_is_index_error(folder):
    dataset = m.FolderDataset(folder)
    assert torch.equal(dataset[-1]["image"], dataset[5]["image"])
    assert torch.equal(dataset[-6]["image"], dataset[0]["image"])
    for idx in (6, -7):
        with pytest.raises(IndexError):
            dataset[idx]
    assert len(list(dataset)) == 6  # for-iteration ends at the IndexError


def test_wrap_around_never_raises_index_error(folder):
    wrapping = m.WrapAround(folder)
    assert torch.equal(wrapping[6]["image"], wrapping[0]["image"])
    assert torch.equal(wrapping[1000]["image"], wrapping[1000 % 6]["image"])


def test_samples_load_lazily_one_file_per_getitem(folder):
    dataset = m.FolderDataset(folder)  # reads index.csv only
    (folder / "images" / "0003.npy").unlink()
    assert dataset[2]["image"].shape == (8, 8)
    with pytest.raises(FileNotFoundError):
        dataset[3]


def test_transform_is_applied_to_every_sample_and_keeps_the_input(folder):
    plain, floats = m.FolderDataset(folder), m.FolderDataset(folder, transform=m.to_float)
    for raw, scaled in zip(plain, floats, strict=True):
        torch.testing.assert_close(scaled["image"], raw["image"].float() / 255)
        assert scaled["label"] == raw["label"] and raw["image"].dtype == torch.uint8


def test_stream_yields_the_same_samples_as_the_dataset_with_its_transform(folder):
    streamed = list(m.FolderStream(folder, transform=m.to_float))
    expected = list(m.FolderDataset(folder, transform=m.to_float))
    assert len(streamed) == 6
    for a, b in zip(streamed, expected):
        assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]


def test_split_is_disjoint_covering_and_reproduced_by_its_seed(tmp_path):
    m.write_example_folder(tmp_path, num_samples=20, seed=0)
    dataset = m.FolderDataset(tmp_path)
    train, val = m.split(dataset, 4, seed=0)
    assert (len(train), len(val)) == (16, 4)
    assert sorted(train.indices + val.indices) == list(range(20))
    assert m.split(dataset, 4, seed=0)[1].indices == val.indices
    assert m.split(dataset, 4, seed=1)[1].indices != val.indices


def test_a_good_root_is_accepted(folder):
    assert m.parse_args(["--root", str(folder)]).root == folder


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


GOOD = npy_bytes(np.zeros((8, 8), np.uint8))
ZIP = "an .npz archive under a .npy name"
DAMAGED_FILES = {  # what images/0001.npy holds -> the end of the error line
    "zero bytes": (b"", "not a readable .npy array (EOF: reading magic string"),
    "text": (b"not an array", "not a readable .npy array (the magic string is not correct"),
    "truncated": (GOOD[:-10], "not a readable .npy array ("),
    ZIP: (None, "not a readable .npy array (the magic string is not correct"),
    "object array": (npy_bytes(np.array([None], dtype=object)),
                     "not a readable .npy array (Object arrays cannot be loaded"),
    "strings": (npy_bytes(np.array(["a", "b"])), "expected a non-empty 2-D uint8 array, got <U1"),
    "floats": (npy_bytes(np.zeros((8, 8))), "expected a non-empty 2-D uint8 array, got float64"),
    "empty": (npy_bytes(np.zeros((0, 8), np.uint8)),
               "expected a non-empty 2-D uint8 array, got uint8 (0, 8)"),
    "3-D": (npy_bytes(np.zeros((2, 8, 8), np.uint8)),
            "expected a non-empty 2-D uint8 array, got uint8 (2, 8, 8)"),
}


@pytest.mark.parametrize("damage", DAMAGED_FILES)
def test_a_damaged_sample_file_is_named_in_one_error_line(damage, folder, capsys):
    content, message = DAMAGED_FILES[damage]
    path = folder / "images" / "0001.npy"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", GOOD)
    else:
        path.write_bytes(content)
    line = parse_error(m, ["--root", str(folder)], capsys)
    assert line.startswith(f"{path}: {message}"), line


def write_index(folder, *lines):
    (folder / "index.csv").write_text("".join(line + "\n" for line in lines))


BAD_INDEXES = {  # index.csv lines -> the error, after "<folder>/index.csv:"
    "no header": (["images/0000.npy,1"], "1: the first line must be the header 'file,label'"),
    "other header": (["path,class", "images/0000.npy,1"], "1: the first line must be the header"),
    "label missing": (["file,label", "images/0000.npy"],
                      "2: expected 'file,label' with a label of 0 or more, got 'images/0000.npy'"),
    "label not a number": (["file,label", "images/0000.npy,0", "images/0001.npy,cat"],
                           "3: expected 'file,label' with a label of 0 or more"),
    "negative label": (["file,label", "images/0000.npy,-1"], "2: expected 'file,label' with a"),
    "three fields": (["file,label", "images/0000.npy,1,2"], "2: expected 'file,label' with a"),
    "missing file": (["file,label", "images/gone.npy,0"], "2: 'images/gone.npy' is not a file "),
    "a folder": (["file,label", "images,0"], "2: 'images' is not a file inside"),
    "outside the root": (["file,label", "../outside.npy,0"], "2: '../outside.npy' is not a file"),
}


@pytest.mark.parametrize("case", BAD_INDEXES)
def test_a_bad_index_row_is_named_by_file_and_line(case, folder, capsys):
    lines, message = BAD_INDEXES[case]
    np.save(folder.parent / "outside.npy", np.zeros((8, 8), np.uint8))  # exists, but outside
    write_index(folder, *lines)
    line = parse_error(m, ["--root", str(folder)], capsys)
    assert line.startswith(f"{folder / 'index.csv'}:{message}"), line


def test_an_absolute_path_in_the_index_is_refused(folder, capsys):
    write_index(folder, "file,label", f"{folder / 'images' / '0000.npy'},0", "/etc/hostname,0")
    line = parse_error(m, ["--root", str(folder)], capsys)
    assert line == f"{folder / 'index.csv'}:3: '/etc/hostname' is not a file inside {folder}"


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--root", "nope"], "--root nope: no such folder"),
    (["--num-samples", "1"], "argument --num-samples: must be in 2..10000, got 1"),
    (["--num-samples", "10001"], "argument --num-samples: must be in 2..10000, got 10001"),
    (["--num-samples", "ten"], "argument --num-samples: invalid integer value: 'ten'"),
]

def test_a_folder_without_a_usable_index(folder, capsys):
    (folder / "index.csv").unlink()
    message = f"--root {folder}: needs an index.csv file of at most 10 MB"
    assert parse_error(m, ["--root", str(folder)], capsys) == message
    os.mkfifo(folder / "index.csv")  # would block a reader forever: refused without opening
    assert parse_error(m, ["--root", str(folder)], capsys) == message
    (folder / "index.csv").unlink()
    with open(folder / "index.csv", "wb") as f:
        f.truncate(10 * 2**20 + 1)
    assert parse_error(m, ["--root", str(folder)], capsys) == message


def test_the_smallest_folder_runs_end_to_end(tmp_path, monkeypatch, capsys):
    m.write_example_folder(tmp_path / "data", num_samples=2, seed=0)
    run_in_process("02_dataset.py", ["--root", str(tmp_path / "data")], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert captured.err == "" and "random_split: train 1, val 1, val indices [" in captured.out
    write_index(tmp_path / "data", "file,label", "images/0000.npy,0")
    assert parse_error(m, ["--root", str(tmp_path / "data")], capsys) == (
        f"{tmp_path / 'data' / 'index.csv'}: the split needs 2 samples or more, it lists 1")


def interrupt_after_first_line() -> tuple:
    tmp = scratch("02-ctrl-c")
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return (*interrupt("02_dataset.py", "--num-samples", "3000", after={"index.csv starts": 0},
                       cwd=tmp, env=env), tmp)


@early()
def interrupted():
    return submit(interrupt_after_first_line)


def test_ctrl_c_is_one_line_and_removes_the_example_folder(interrupted):
    """Python ends a program that a Ctrl-C stopped by SIGINT itself, which a shell reports as
    status 130. The temporary folder is removed on the way out."""
    code, out, err, tmp = interrupted.result()
    assert out.startswith("index.csv starts: ")
    assert code in (130, -signal.SIGINT) and err == "interrupted\n", err
    assert [p.name for p in tmp.iterdir()] == []
