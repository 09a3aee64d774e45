"""02_dataset.py: a lazy map-style Dataset over a folder, iteration, transform, stream, split,
and one error line naming the file (and line) for each kind of damage a folder can have."""
import gc
import io
import tempfile
import zipfile

import numpy as np
import pytest
import torch

from conftest import error_line, load_script, run_in_process

m = load_script("02_dataset.py")

KEY_LINES = [r"^len\(dataset\): 10; dataset\[0\]: image \(8, 8\) torch.uint8, label [01]; "
             r"list\(dataset\): 10 items$",
             r"^with transform=to_float: torch.float32, in 0\.\d{3}\.\.0\.\d{3}$",
             r"^FolderStream yields the samples of FolderDataset: True$",
             r"^random_split: train 8, val 2, val indices \[\d, \d\]$",
             r"^same seed, same split: True$"]
BAD_RUN = (["--root", "no-such-folder"],
           "[Errno 2] No such file or directory: 'no-such-folder/index.csv'")
FLAG_RUN = (["--seed", "1"], r"^random_split: train 8, val 2, val indices \[\d, \d\]$")


@pytest.fixture
def folder(tmp_path):
    return m.write_example_folder(tmp_path, n=6, seed=0)


def test_len_and_samples_are_what_the_files_hold(folder):
    dataset = m.FolderDataset(folder)
    assert len(dataset) == 6
    for i in range(6):
        stored = np.load(folder / "images" / f"{i}.npy")
        sample = dataset[i]
        assert set(sample) == {"image", "label"} and sample["image"].dtype == torch.uint8
        assert torch.equal(sample["image"], torch.from_numpy(stored))
        assert sample["label"] == int(stored.mean() > 127.5)


def test_negative_index_counts_from_the_end_and_iteration_ends_at_index_error(folder):
    dataset = m.FolderDataset(folder)
    assert torch.equal(dataset[-1]["image"], dataset[5]["image"])
    for idx in (6, -7):
        with pytest.raises(IndexError):
            dataset[idx]
    assert len(list(dataset)) == 6


def test_samples_load_lazily_one_file_per_getitem(folder):
    dataset = m.FolderDataset(folder)  # reads index.csv only
    (folder / "images" / "3.npy").unlink()
    assert dataset[2]["image"].shape == (8, 8)
    with pytest.raises(FileNotFoundError):
        dataset[3]


def test_transform_is_applied_to_every_sample_and_keeps_the_input(folder):
    plain, floats = m.FolderDataset(folder), m.FolderDataset(folder, transform=m.to_float)
    for raw, scaled in zip(plain, floats, strict=True):
        torch.testing.assert_close(scaled["image"], raw["image"].float() / 255)
        assert scaled["label"] == raw["label"] and raw["image"].dtype == torch.uint8


def test_stream_yields_the_samples_of_the_dataset_with_its_transform(folder):
    streamed = list(m.FolderStream(folder, transform=m.to_float))
    expected = list(m.FolderDataset(folder, transform=m.to_float))
    assert len(streamed) == 6
    for a, b in zip(streamed, expected):
        assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]


def test_split_is_disjoint_covering_and_reproduced_by_its_seed():
    dataset = list(range(20))
    train, val = m.split(dataset, 4, seed=0)
    assert (len(train), len(val)) == (16, 4)
    assert sorted(train.indices + val.indices) == dataset
    torch.manual_seed(123)  # other draws before the split do not shift it
    assert m.split(dataset, 4, seed=0)[1].indices == val.indices
    assert m.split(dataset, 4, seed=1)[1].indices != val.indices


def write_index(folder, text: str | bytes) -> None:
    path = folder / "index.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def test_blank_lines_and_a_byte_order_mark_are_read_as_csv_dictreader_reads_them(folder):
    write_index(folder, "\ufefffile,label\n\nimages/0.npy,1\n\nimages/1.npy,0\n\n\n")
    assert [(p.name, label) for p, label in m.read_index(folder)] == [("0.npy", 1), ("1.npy", 0)]


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npz(array) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", npy(array))
    return buffer.getvalue()


def huge_header(shape: tuple) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def raw_header(header: bytes) -> bytes:  # a .npy file, version 1.0, that is its header alone
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


GOOD = npy(np.zeros((8, 8), np.uint8))
DAMAGED_FILES = {  # what images/1.npy holds -> the error after "<path>: "
    "zero bytes": (b"", "not a readable .npy file"),
    "text": (b"not an array", "not a readable .npy file"),  # not "use allow_pickle=True"
    "cut short": (GOOD[:-10], "not a readable .npy file"),
    "an object array": (npy(np.array([None], dtype=object)), "not a readable .npy file"),
    "a header claiming 8.9 PiB": (huge_header((10**8, 10**8)), "not a readable .npy file"),
    "a header over int64": (huge_header((2**64,)), "not a readable .npy file"),  # OverflowError
    "a header cut mid-dict": (raw_header(b"{'descr': '|u1', 'fortran_order': False,\n"),
                              "not a readable .npy file"),  # tokenize.TokenError
    "a header's key as bytes": (raw_header(b"{b'descr': '|u1', 'fortran_order': False, "
                                           b"'shape': (8, 8)}\n"), "not a readable .npy file"),
    "floats": (npy(np.zeros((8, 8))), "not a non-empty 2-D uint8 array: float64 (8, 8)"),
    "3-D": (npy(np.zeros((2, 8, 8), np.uint8)), "not a non-empty 2-D uint8 array: uint8 (2, 8, 8)"),
    "empty": (npy(np.zeros((0, 8), np.uint8)), "not a non-empty 2-D uint8 array: uint8 (0, 8)"),
    "an .npz archive": (npz(np.zeros((8, 8), np.uint8)), "not a readable .npy file"),
    "a zip cut short": (npz(np.zeros((8, 8), np.uint8))[:30], "not a readable .npy file"),
}


@pytest.mark.parametrize("damage", DAMAGED_FILES)
def test_a_damaged_sample_file_is_one_error_line_naming_it(damage, folder, monkeypatch, capsys):
    content, message = DAMAGED_FILES[damage]
    (folder / "images" / "1.npy").write_bytes(content)
    line = error_line("02_dataset.py", ["--root", str(folder)], monkeypatch, capsys)
    assert line.startswith(f"{folder / 'images' / '1.npy'}: {message}"), line


BAD_INDEXES = {  # index.csv -> the error after "<folder>/index.csv"
    "UTF-16, as Excel's Unicode text": ("file,label\nimages/0.npy,1\n".encode("utf-16"),
                                        ": not UTF-8 text (Excel: save as \"CSV UTF-8\")"),
    "latin-1": ("file,label\nimages/0.npy,1\n# café\n".encode("latin-1"), ": not UTF-8 text"),
    "a stray quote": ('file,label\nimages/0.npy,"1\nimages/1.npy,0\n',
                      ":3: unexpected end of data"),
    "a quote inside a field": ('file,label\nimages/0.npy,1\n"images/"1.npy,0\n',
                               ":3: ',' expected after '\"'"),
    "a field over csv's limit": ("file,label\nimages/0.npy," + "1" * 200_000 + "\n",
                                 ":2: field larger than field limit"),
    "no header": ("images/0.npy,1\n", ":1: the first line must be the header 'file,label'"),
    "Excel's semicolons": ("file;label\nimages/0.npy;1\n", ":1: the first line must be the"),
    "a label missing": ("file,label\nimages/0.npy\n",
                        ":2: not 'file,label >= 0': ['images/0.npy']"),
    "a label not a number": ("file,label\nimages/0.npy,0\nimages/1.npy,cat\n",
                             ":3: not 'file,label >= 0': ['images/1.npy', 'cat']"),
    "a negative label": ("file,label\nimages/0.npy,-1\n", ":2: not 'file,label >= 0'"),
    "no file name": ("file,label\n,1\n", ":2: not 'file,label >= 0': ['', '1']"),
    "a NUL in a file name": ("file,label\nimages/0\0.npy,1\n",  # Python 3.10's csv refuses it
                             (":2: not 'file,label >= 0'", ":2: line contains NUL")),
    "no rows": ("file,label\n\n", ": no rows after the header"),
}


@pytest.mark.parametrize("case", BAD_INDEXES)
def test_a_bad_index_is_one_error_line_naming_file_and_line(case, folder, monkeypatch, capsys):
    text, message = BAD_INDEXES[case]
    write_index(folder, text)
    line = error_line("02_dataset.py", ["--root", str(folder)], monkeypatch, capsys)
    messages = message if isinstance(message, tuple) else (message,)
    assert line.startswith(tuple(f"{folder / 'index.csv'}{m}" for m in messages)), line


def test_a_missing_sample_file_is_named(folder, monkeypatch, capsys):
    write_index(folder, "file,label\nimages/0.npy,0\nimages/gone.npy,1\n")
    line = error_line("02_dataset.py", ["--root", str(folder)], monkeypatch, capsys)
    assert line == f"[Errno 2] No such file or directory: '{folder / 'images' / 'gone.npy'}'"


def test_your_folder_runs_the_whole_lesson(folder, monkeypatch, capsys):
    run_in_process("02_dataset.py", ["--root", str(folder)], monkeypatch)
    out = capsys.readouterr().out
    assert "len(dataset): 6;" in out and "random_split: train 5, val 1, val indices [" in out


def test_ctrl_c_leaves_no_example_folder_behind(tmp_path, monkeypatch):
    """A KeyboardInterrupt (Ctrl-C) ends the script, as Python's convention is; the example
    folder, a TemporaryDirectory object, is removed all the same (here, once the interrupted
    run's variables are collected; in a program that Ctrl-C ended, at exit)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    there = []

    def ctrl_c(*args, **kwargs):  # pressed during the last section
        there.extend(tmp_path.iterdir())
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.utils.data, "random_split", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_in_process("02_dataset.py", [], monkeypatch)
    gc.collect()
    assert len(there) == 1 and list(tmp_path.iterdir()) == []
