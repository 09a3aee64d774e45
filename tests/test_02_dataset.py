"""02_dataset.py: a lazy map-style Dataset over a folder, iteration, transform, stream, split."""
import numpy as np
import pytest
import torch

from conftest import load_script, main_error

m = load_script("02_dataset.py")


@pytest.fixture
def folder(tmp_path):
    m.write_example_folder(tmp_path, num_samples=6, size=4, seed=0)
    return tmp_path


def test_len_and_sample_contents(folder):
    dataset = m.FolderDataset(folder)
    assert len(dataset) == 6
    sample = dataset[2]
    assert set(sample) == {"image", "label"}
    assert sample["image"].shape == (4, 4) and sample["image"].dtype == torch.uint8
    stored = np.load(folder / "images" / "0002.npy")
    assert torch.equal(sample["image"], torch.from_numpy(stored))
    assert sample["label"] == int(stored.mean() > 127.5)


def test_negative_index_counts_from_the_end(folder):
    dataset = m.FolderDataset(folder)
    assert torch.equal(dataset[-1]["image"], dataset[5]["image"])
    assert torch.equal(dataset[-6]["image"], dataset[0]["image"])


@pytest.mark.parametrize("idx", [6, 7, -7])
def test_index_out_of_range_raises_index_error(folder, idx):
    with pytest.raises(IndexError, match="out of range for 6 samples"):
        m.FolderDataset(folder)[idx]


def test_plain_iteration_stops_after_len_items(folder):
    dataset = m.FolderDataset(folder)
    labels = [sample["label"] for sample in dataset]
    assert labels == [dataset[i]["label"] for i in range(6)]


def test_samples_load_lazily_one_file_per_getitem(folder):
    dataset = m.FolderDataset(folder)  # reads index.csv only
    (folder / "images" / "0003.npy").unlink()
    assert dataset[2]["image"].shape == (4, 4)
    with pytest.raises(FileNotFoundError):
        dataset[3]


def test_transform_is_applied_to_every_sample(folder):
    plain, floats = m.FolderDataset(folder), m.FolderDataset(folder, transform=m.to_float)
    for raw, scaled in zip(plain, floats):
        assert scaled["image"].dtype == torch.float32
        torch.testing.assert_close(scaled["image"], raw["image"].float() / 255)
        assert scaled["label"] == raw["label"]


def test_index_stream_yields_each_row_once_in_order(folder):
    streamed = list(m.IndexStream(folder))
    assert [s["file"] for s in streamed] == [f"images/{i:04d}.npy" for i in range(6)]
    assert [s["label"] for s in streamed] == [s["label"] for s in m.FolderDataset(folder)]


def test_split_sizes_disjoint_and_covering(tmp_path):
    m.write_example_folder(tmp_path, num_samples=10, size=2, seed=0)
    train, val = m.split(m.FolderDataset(tmp_path), 0.2, seed=0)
    assert (len(train), len(val)) == (8, 2)
    assert sorted(train.indices + val.indices) == list(range(10))


def test_split_is_reproduced_by_its_seed(tmp_path):
    m.write_example_folder(tmp_path, num_samples=20, size=2, seed=0)
    dataset = m.FolderDataset(tmp_path)
    first, again, other = (m.split(dataset, 0.25, seed)[1].indices for seed in (0, 0, 1))
    assert first == again
    assert first != other


def test_root_reads_an_existing_folder(folder, capsys):
    m.main(["--root", str(folder)])
    assert "len(dataset): 6" in capsys.readouterr().out


def write_index(folder, *rows):
    (folder / "index.csv").write_text("file,label\n" + "".join(r + "\n" for r in rows))


def test_missing_root_folder(tmp_path, capsys):
    line = main_error(m, ["--root", str(tmp_path / "nope")], capsys)
    assert line.endswith(f"{tmp_path / 'nope'}: no such folder")


def test_index_row_naming_a_missing_file(folder, capsys):
    write_index(folder, "images/0000.npy,1", "images/gone.npy,0")
    line = main_error(m, ["--root", str(folder)], capsys)
    assert line.endswith(f"{folder / 'index.csv'}:3: images/gone.npy does not exist in {folder}")


@pytest.mark.parametrize("row", ["images/0000.npy", "images/0000.npy,cat", "a,1,2"])
def test_malformed_index_row_names_file_and_line(folder, row, capsys):
    write_index(folder, "images/0001.npy,0", row)
    line = main_error(m, ["--root", str(folder)], capsys)
    assert f"{folder / 'index.csv'}:3: expected 'file,label' with an integer label" in line


def test_missing_and_empty_index(folder, capsys):
    (folder / "index.csv").unlink()
    assert "index.csv: no such file" in main_error(m, ["--root", str(folder)], capsys)
    write_index(folder)
    assert "index.csv: lists no samples" in main_error(m, ["--root", str(folder)], capsys)


def test_sample_file_that_is_not_npy(folder, capsys):
    (folder / "images" / "0000.npy").write_text("not an array")
    line = main_error(m, ["--root", str(folder)], capsys)
    assert f"{folder / 'images' / '0000.npy'}: not a .npy array" in line


@pytest.mark.parametrize("argv", [["--num-samples", "0"], ["--image-size", "-1"],
                                  ["--val-fraction", "0"], ["--val-fraction", "1.5"]])
def test_sizes_out_of_range(argv, capsys):
    assert f"argument {argv[0]}: must be" in main_error(m, argv, capsys)
