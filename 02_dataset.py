"""A Dataset says how many samples there are (__len__) and how to load sample i (__getitem__).
This one reads a folder lazily: a small index file up front, one sample file per __getitem__.

Run:  python 02_dataset.py --num-samples 10 --seed 0
      python 02_dataset.py --root path/to/folder   # a folder with index.csv and .npy files
"""
# %%
import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, random_split

# %% [markdown]
# ## The folder layout
# `index.csv` has a header `file,label` and one row per sample; each `file` is a `.npy`
# array (an 8x8 grayscale image here) relative to the folder. The demo writes such a folder
# into a temporary directory; `--root` reads one of yours.

# %%
def write_example_folder(root: Path, num_samples: int, size: int, seed: int) -> None:
    """Write num_samples random uint8 images and their index. Label: is the image bright?"""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for i in range(num_samples):
            image = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
            file = f"images/{i:04d}.npy"
            np.save(root / file, image)
            writer.writerow([file, int(image.mean() > 127.5)])


def read_index(root: Path) -> list[tuple[str, int]]:
    """The (file, label) rows of root/index.csv, each checked, with file:line in any error."""
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    index = root / "index.csv"
    if not index.is_file():
        raise ValueError(f"{index}: no such file (the folder needs an index.csv)")
    rows = []
    with open(index, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1:
                continue  # the header
            if len(row) != 2 or not row[1].strip().lstrip("-").isdigit():
                raise ValueError(f"{index}:{line_no}: expected 'file,label' with an integer label, "
                                 f"got {','.join(row)!r}")
            file, label = row[0].strip(), int(row[1])
            if not (root / file).is_file():
                raise ValueError(f"{index}:{line_no}: {file} does not exist in {root}")
            rows.append((file, label))
    if not rows:
        raise ValueError(f"{index}: lists no samples")
    return rows


# %% [markdown]
# ## A map-style Dataset
# `__init__` reads only the index: opening every sample here would load the whole data set
# into memory before training starts. `__getitem__` loads one sample when asked.
#
# Pitfall: `for sample in dataset` has no `__iter__` to call, so Python calls
# `__getitem__(0)`, `(1)`, ... until an `IndexError`. A `__getitem__` that never raises it
# (say, one that wraps the index around) makes that loop endless. Ours raises it.

# %%
def load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)  # no pickle: a data file cannot run code
    except ValueError as e:
        raise ValueError(f"{path}: not a .npy array ({str(e).split('.')[0]})") from None


class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.root = Path(root)
        self.rows = read_index(self.root)
        self.transform = transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        if idx < 0:  # dataset[-1] is the last sample, as for a list
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for {len(self)} samples")
        file, label = self.rows[idx]
        image = torch.from_numpy(load_array(self.root / file))  # (H, W) uint8
        sample = {"image": image, "label": label}
        return self.transform(sample) if self.transform else sample


def to_float(sample: dict) -> dict:
    """A transform: uint8 pixels 0..255 to float32 0..1. Returns a new dict, input untouched."""
    return {**sample, "image": sample["image"].float() / 255}


# %% [markdown]
# ## An IterableDataset
# For data that only streams (a socket, a huge file read line by line, a generator) there is
# no `len` and no random access: implement `__iter__` instead. This one streams the index.
# (With DataLoader workers, each worker would stream everything: 04_dataloader.py splits it.)

# %%
class IndexStream(IterableDataset):
    def __init__(self, root):
        self.index = Path(root) / "index.csv"

    def __iter__(self):
        with open(self.index, newline="") as f:
            reader = csv.reader(f)
            next(reader)  # the header
            for file, label in reader:
                yield {"file": file, "label": int(label)}


# %% [markdown]
# ## Train and validation
# `random_split` shuffles indices; give it its own seeded generator so the split is the same
# on every run, whatever else has drawn from the global random state.

# %%
def split(dataset, val_fraction: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return random_split(dataset, [1 - val_fraction, val_fraction], generator=generator)


# %%
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def demo(root: Path, val_fraction: float, seed: int) -> None:
    dataset = FolderDataset(root)
    print(f"len(dataset): {len(dataset)}")
    sample = dataset[0]
    print(f"dataset[0]: image {tuple(sample['image'].shape)} {sample['image'].dtype}, "
          f"label {sample['label']}")
    print(f"dataset[-1] is dataset[{len(dataset) - 1}]: "
          f"{torch.equal(dataset[-1]['image'], dataset[len(dataset) - 1]['image'])}")
    try:
        dataset[len(dataset)]
    except IndexError as e:
        print(f"dataset[{len(dataset)}] -> IndexError: {e}")
    labels = [s["label"] for s in dataset]  # ends after len(dataset) items, thanks to IndexError
    print(f"iterated {len(labels)} samples, labels {labels}")

    floats = FolderDataset(root, transform=to_float)
    image = floats[0]["image"]
    print(f"with transform=to_float: {image.dtype}, min {image.min():.3f}, max {image.max():.3f}")

    streamed = list(IndexStream(root))
    print(f"IndexStream yielded {len(streamed)} samples, first {streamed[0]}")

    train, val = split(dataset, val_fraction, seed)
    print(f"random_split: train {len(train)}, val {len(val)}, val indices {sorted(val.indices)}")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # bad input: one line naming it, exit 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", type=Path, default=None,
                        help="folder with index.csv and .npy files; none: write an example one")
    parser.add_argument("--num-samples", type=positive_int, default=10,
                        help="samples in the example folder")
    parser.add_argument("--image-size", type=positive_int, default=8, help="example images' side")
    parser.add_argument("--val-fraction", type=fraction, default=0.2, help="share for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed for the example data and split")
    if argv is None and "ipykernel" in sys.modules:  # a Jupyter kernel's argv is its own
        argv = []
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        if args.root is not None:
            demo(args.root, args.val_fraction, args.seed)
            return
        with tempfile.TemporaryDirectory() as folder:  # removed on exit: the script leaves nothing
            root = Path(folder)
            write_example_folder(root, args.num_samples, args.image_size, args.seed)
            print(f"wrote {args.num_samples} samples and index.csv to a temporary folder")
            demo(root, args.val_fraction, args.seed)
    except ValueError as e:  # a bad --root: one line that names the file, not a traceback
        parser.error(str(e))


if __name__ == "__main__":
    main()
