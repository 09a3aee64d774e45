# %% [markdown]
# # 02 - A Dataset: how many samples, and how to load sample i
# A map-style `Dataset` has `__len__` and `__getitem__`; this one reads a folder lazily, a small
# index up front and one file per sample. Then iteration, `transform=`, an `IterableDataset` and
# a seeded train/validation split. Run: `python 02_dataset.py` (or `--root DIR` for your folder)

# %%
import argparse
import csv
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, random_split


def int_in(lo: int, hi: int):
    """An argparse type: an integer from lo to hi."""
    def integer(text: str) -> int:
        value = int(text)  # not a number: argparse says "invalid integer value"
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    return integer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A Dataset over a folder of .npy files.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", type=Path,
                        help="a folder with index.csv and .npy files; none: an example folder")
    parser.add_argument("--num-samples", type=int_in(2, 10_000), default=10, help="2..10000")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="0..2**32-1")
    args = parser.parse_args(argv)
    # With --root, read every row and file once now, so that a damaged one is an error naming
    # it rather than a traceback halfway through the lesson. The Dataset still loads lazily.
    if args.root is not None:
        index = args.root / "index.csv"
        if not args.root.is_dir():
            parser.error(f"--root {args.root}: no such folder")
        if not index.is_file() or index.stat().st_size > 10 * 2**20:
            parser.error(f"--root {args.root}: needs an index.csv file of at most 10 MB")
        try:
            rows = list(iter_index(args.root))
            for path, _ in rows:
                if path.stat().st_size > 64 * 2**20:
                    parser.error(f"{path}: over 64 MB, more than this lesson reads")
                load_image(path)
        except (OSError, ValueError) as e:
            parser.error(str(e))
        if len(rows) < 2:
            parser.error(f"{index}: the split needs 2 samples or more, it lists {len(rows)}")
    return args

# %% [markdown]
# ## The data: `index.csv` and one `.npy` file per sample
# The index has the header `file,label`, then one row per sample: a path inside the folder and a
# class number. Each file holds one 8x8 grayscale image, a 2-D uint8 array. Reading checks
# every row and file and names the file (and line) of anything wrong; `allow_pickle=False`
# means a data file can never run code. The demo writes such a folder to a temporary directory,
# removed at the end (or at exit, after a Ctrl-C).

# %%
def write_example_folder(root: Path, num_samples: int, seed: int) -> None:
    """Random 8x8 images; the label says whether the image is bright on average."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for i in range(num_samples):
            image = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            np.save(root / f"images/{i:04d}.npy", image)
            writer.writerow([f"images/{i:04d}.npy", int(image.mean() > 127.5)])


def iter_index(root: Path):
    """Yield (path, label) for each row of root/index.csv; a ValueError names file:line."""
    index, inside = root / "index.csv", root.resolve()
    with open(index, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's CSV works too
        reader = csv.reader(f)
        if next(reader, None) != ["file", "label"]:
            raise ValueError(f"{index}:1: the first line must be the header 'file,label'")
        for row in reader:
            where = f"{index}:{reader.line_num}"
            if len(row) != 2 or not row[1].strip().isdecimal():
                raise ValueError(f"{where}: expected 'file,label' with a label of 0 or more, "
                                 f"got {','.join(row)!r}")
            path = (root / row[0].strip()).resolve()
            if not path.is_relative_to(inside) or not path.is_file():
                raise ValueError(f"{where}: {row[0]!r} is not a file inside {root}")
            yield path, int(row[1])


def load_image(path: Path) -> torch.Tensor:
    """A non-empty 2-D uint8 array from a .npy file, as an (H, W) tensor."""
    with open(path, "rb") as f:  # read_array reads .npy alone: no pickle, no .npz
        try:
            array = np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as e:  # not .npy, truncated, or an object array that needs pickle
            raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if array.dtype != np.uint8 or array.ndim != 2 or array.size == 0:
        raise ValueError(f"{path}: expected a non-empty 2-D uint8 array, "
                         f"got {array.dtype} {array.shape}")
    return torch.from_numpy(array)


if __name__ == "__main__":  # demo code runs only when this file is run, never on import
    # Flags come from `python 02_dataset.py --x` or `%run 02_dataset.py --x`; in a notebook, the
    # kernel's argv is not ours, so the defaults apply.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])
    sys.excepthook = lambda kind, *info: (  # Ctrl-C: one line, not a traceback
        print("interrupted", file=sys.stderr) if issubclass(kind, KeyboardInterrupt)
        else sys.__excepthook__(kind, *info))
    folder = tempfile.TemporaryDirectory()  # removed by folder.cleanup() below, or at exit
    root = args.root or Path(folder.name)
    if args.root is None:
        write_example_folder(root, args.num_samples, args.seed)
    print(f"index.csv starts: {(root / 'index.csv').read_text('utf-8-sig').splitlines()[:3]}")

# %% [markdown]
# ## A map-style Dataset
# `__init__` reads the index, small and needed for `__len__`; `__getitem__` loads one sample
# when asked. Loading every image in `__init__` instead is a trade-off, not a mistake:
# torchvision's MNIST does it, and it is right when the data fits in memory comfortably and is
# read every epoch. Lazy loading is right when it does not fit, or when samples are big files
# and DataLoader workers should share the reading.

# %%
class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.rows = list(iter_index(Path(root)))  # [(path, label), ...]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        path, label = self.rows[idx]  # a list: -1 is the last row, past the end is IndexError
        sample = {"image": load_image(path), "label": label}
        return self.transform(sample) if self.transform is not None else sample


if __name__ == "__main__":
    dataset = FolderDataset(root)
    sample = dataset[0]
    print(f"len(dataset): {len(dataset)}")
    print(f"dataset[0]: image {tuple(sample['image'].shape)} {sample['image'].dtype}, "
          f"label {sample['label']}")

# %% [markdown]
# ## Iterating
# `for sample in dataset` works without an `__iter__`: Python calls `__getitem__(0)`, `(1)`, ...
# until one raises `IndexError`. Ours gets it from the list of rows, which also makes
# `dataset[-1]` the last sample. (A DataLoader does not rely on this: it asks `len()` and draws
# indices from a sampler.) Pitfall: a `__getitem__` that wraps around (`idx % len`) never
# raises it, so the loop never ends; `itertools.islice` shows it going past the end.

# %%
class WrapAround(FolderDataset):  # the wrong way, for the demo: never raises IndexError
    def __getitem__(self, idx: int) -> dict:
        return super().__getitem__(idx % len(self))


if __name__ == "__main__":
    last = len(dataset) - 1
    print(f"dataset[-1] is dataset[{last}]: "
          f"{torch.equal(dataset[-1]['image'], dataset[last]['image'])}")
    try:
        dataset[len(dataset)]
    except IndexError as e:
        print(f"dataset[{len(dataset)}]: IndexError: {e}")
    print(f"for sample in dataset: {sum(1 for _ in dataset)} samples, then it stops")
    endless = itertools.islice(WrapAround(root), 3 * len(dataset))  # a for loop would not stop
    print(f"WrapAround: still going after {sum(1 for _ in endless)} samples")

# %% [markdown]
# ## `transform=`: change each sample as it is loaded
# A transform is any function from a sample to a sample (03_transforms.py has more). Here, uint8
# pixels 0..255 become float32 0..1: models compute in floating point.

# %%
def to_float(sample: dict) -> dict:
    return {**sample, "image": sample["image"].float() / 255}  # a new dict: the input is kept


if __name__ == "__main__":
    image = FolderDataset(root, transform=to_float)[0]["image"]
    print(f"with transform=to_float: {image.dtype}, min {image.min():.3f}, max {image.max():.3f}")

# %% [markdown]
# ## An IterableDataset: a stream, no random access
# For data that only streams (a socket, a huge file read line by line), implement `__iter__`;
# `__len__` is optional, and this one has none.
# This one yields the same samples as `FolderDataset`, reading the index as it goes, so even an
# index too big for memory would work. With DataLoader workers each worker would stream
# everything: 04_dataloader.py shows the split.

# %%
class FolderStream(IterableDataset):
    def __init__(self, root, transform=None):
        self.root, self.transform = Path(root), transform

    def __iter__(self):
        for path, label in iter_index(self.root):
            sample = {"image": load_image(path), "label": label}
            yield self.transform(sample) if self.transform is not None else sample


if __name__ == "__main__":
    stream = FolderStream(root)
    same = all(torch.equal(a["image"], b["image"]) and a["label"] == b["label"]
               for a, b in zip(stream, dataset, strict=True))
    print(f"FolderStream yields the same samples as FolderDataset: {same}")
    try:
        len(stream)
    except TypeError as e:
        print(f"len(stream): TypeError: {e}")

# %% [markdown]
# ## Train and validation: `random_split`
# It shuffles the indices and cuts them into the lengths you give (or fractions, `[0.8, 0.2]`),
# returning `Subset`s: views with `.indices` into the same dataset, so both parts share its
# transform. Give it its own seeded generator: the split is then the same on every run,
# whatever else drew random numbers before.

# %%
def split(dataset: Dataset, num_val: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return random_split(dataset, [len(dataset) - num_val, num_val], generator=generator)


if __name__ == "__main__":
    train, val = split(dataset, max(1, len(dataset) // 5), args.seed)  # a fifth for validation
    print(f"random_split: train {len(train)}, val {len(val)}, val indices {sorted(val.indices)}")
    again = split(dataset, len(val), args.seed)[1]
    print(f"  same seed, same split: {again.indices == val.indices}")
    folder.cleanup()
