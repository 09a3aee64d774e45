"""02_dataset.py: a lazy map-style Dataset over a folder, iteration, transform, split, and what
its reader does with each kind of folder a user may hand it."""
import numpy as np
import pytest
import torch

from conftest import Script

m = Script("02_dataset.py")

KEY_LINES = [r"^len\(dataset\): 10; dataset\[0\]: label [01], torch.Size\(\[8, 8\]\)$",
             r"^list\(dataset\) stops at 10 samples: dataset\[10\] raises IndexError: list index "
             r"out of range$",
             r"^Wrapping\(root\)\[10\] equals dataset\[0\]: True$",
             r"^row 0 of dataset\[0\]'s image: \[\d+(, \d+){7}\]$",
             r"^the same, with transform=flip, reversed: \[\d+(, \d+){7}\]$",
             r"^random_split: train on \[\d(, \d){7}\], validate on \[\d, \d\]$",
             r"^val_set's transform is now flip too: True$",
             r"^with a dataset each, val_set's transform is None$"]


def make_folder(root, images, index=None):
    """root/index.csv and one .npy file per image; index: the csv's text, if not the plain one."""
    for i, image in enumerate(images):
        np.save(root / f"{i}.npy", image)
    rows = "".join(f"{i}.npy,{i % 2}\n" for i in range(len(images)))
    (root / "index.csv").write_text(index if index is not None else "file,label\n" + rows)
    return root


@pytest.fixture
def images():
    return [np.arange(12, dtype=np.uint8).reshape(3, 4) * (i + 1) for i in range(5)]


def test_len_and_each_sample_are_what_the_files_hold(tmp_path, images):
    dataset = m.FolderDataset(make_folder(tmp_path, images))
    assert len(dataset) == 5
    for i, image in enumerate(images):
        sample = dataset[i]
        assert sample["image"].dtype == torch.uint8 and sample["label"] == i % 2
        assert torch.equal(sample["image"], torch.from_numpy(image))


def test_iteration_ends_at_the_index_error_and_a_negative_index_counts_from_the_end(tmp_path,
                                                                                   images):
    dataset = m.FolderDataset(make_folder(tmp_path, images))
    assert [s["label"] for s in dataset] == [0, 1, 0, 1, 0]
    assert torch.equal(dataset[-1]["image"], dataset[4]["image"])
    with pytest.raises(IndexError):
        dataset[5]


def test_samples_load_lazily_one_file_per_getitem(tmp_path, images):
    dataset = m.FolderDataset(make_folder(tmp_path, images))  # reads index.csv only
    (tmp_path / "3.npy").unlink()
    assert dataset[2]["image"].shape == (3, 4)
    with pytest.raises(FileNotFoundError, match="3.npy"):
        dataset[3]


def test_a_wrapping_getitem_never_raises_index_error(tmp_path, images):
    wrapping = m.Wrapping(make_folder(tmp_path, images))
    assert torch.equal(wrapping[7]["image"], torch.from_numpy(images[2]))  # 7 % 5
    first_12 = [s["label"] for s, _ in zip(wrapping, range(12))]  # a plain for would not stop
    assert first_12 == [0, 1, 0, 1, 0] * 2 + [0, 1]


def test_the_transform_gets_each_sample_and_leaves_it_as_it_was(tmp_path, images):
    plain = m.FolderDataset(make_folder(tmp_path, images))
    flipped = m.FolderDataset(tmp_path, transform=m.flip)
    for i in range(5):
        assert torch.equal(flipped[i]["image"], torch.from_numpy(images[i][:, ::-1].copy()))
    sample = plain[0]
    m.flip(sample)
    assert torch.equal(sample["image"], torch.from_numpy(images[0]))


@pytest.mark.parametrize("index", ["\ufefffile,label\n0.npy,0\n1.npy,1\n",  # Excel's BOM
                                   "file,label\r\n0.npy,0\r\n\r\n1.npy,1\r\n\r\n"])  # blank lines
def test_a_bom_and_blank_lines_give_the_same_samples(tmp_path, images, index):
    dataset = m.FolderDataset(make_folder(tmp_path, images[:2], index))
    assert dataset.rows == [("0.npy", 0), ("1.npy", 1)]


def test_a_missing_file_raises_file_not_found_with_its_path(tmp_path, images):
    dataset = m.FolderDataset(make_folder(tmp_path, images[:1], "file,label\nnone.npy,0\n"))
    with pytest.raises(FileNotFoundError, match="none.npy"):
        dataset[0]


def test_a_file_that_is_not_npy_and_an_array_of_objects_are_refused(tmp_path, images):
    dataset = m.FolderDataset(make_folder(tmp_path, images[:2]))
    (tmp_path / "0.npy").write_text("file,label\n")  # a CSV where an array should be
    with pytest.raises(ValueError, match="pickled"):
        dataset[0]
    np.save(tmp_path / "1.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Object arrays cannot be loaded"):
        dataset[1]


def test_an_index_without_the_header_names_the_missing_column(tmp_path, images):
    with pytest.raises(KeyError, match="file"):
        m.FolderDataset(make_folder(tmp_path, images[:2], "0.npy,0\n1.npy,1\n"))


def test_random_split_with_its_own_generator_ignores_earlier_draws():
    train, val = m.random_split(range(20), [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    torch.rand(5)  # a draw in between
    again = m.random_split(range(20), [0.8, 0.2], generator=torch.Generator().manual_seed(0))[1]
    assert (len(train), len(val)) == (16, 4) and again.indices == val.indices
    assert sorted(train.indices + val.indices) == list(range(20))


def test_the_lessons_parts_have_a_dataset_each():
    assert m.train_set.dataset is not m.val_set.dataset
    assert m.train_set.dataset.transform is m.flip and m.val_set.dataset.transform is None
    assert sorted(m.train_set.indices + m.val_set.indices) == list(range(10))
