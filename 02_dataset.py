# %% [markdown]
# # 02 - A Dataset: how many samples, and how to load sample i
# A map-style `Dataset` has `__len__` and `__getitem__`; this one reads a folder lazily, a file
# per sample. Then `transform=`, a stream, a split. Run: `python 02_dataset.py` (or `--root DIR`)

# %%
import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, random_split

if __name__ == "__main__":  # the demos run when this file is the program, never on import
    parser = argparse.ArgumentParser(description="A Dataset over a folder of .npy files.")
    parser.add_argument("--root", type=Path, help="index.csv and .npy files; default: an example")
    parser.add_argument("--seed", type=int, default=0)
    # flags: `python 02_dataset.py --seed 1` or `%run 02_dataset.py --seed 1`; a notebook: defaults
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)

# %% [markdown]
# ## The folder: `index.csv` and one `.npy` file per sample
# `index.csv` has the header `file,label`, then a row per sample: a path (from the folder, unless
# absolute) and a class number; each file holds one image, a 2-D uint8 array. What the readers
# cannot use raises OSError, or a ValueError naming the file (index.csv: and the line).
# `allow_pickle=False` (numpy's default) refuses arrays of objects: unpickling could run any code.

# %%
def read_index(root: Path) -> list[tuple[Path, int]]:
    """[(path, label), ...] from root/index.csv; raises OSError, or ValueError naming the file."""
    index, rows = root / "index.csv", []
    with open(index, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8" too
        reader = csv.reader(f, strict=True)  # an unclosed quote: an error, not a field to the end
        try:
            if next(reader, None) != ["file", "label"]:
                raise ValueError(f"{index}:1: the first line must be the header 'file,label'")
            for row in filter(None, reader):  # skips blank lines, as csv.DictReader does
                if len(row) != 2 or not row[0] or "\0" in row[0] or not row[1].strip().isdecimal():
                    raise ValueError(f"{index}:{reader.line_num}: not 'file,label >= 0': {row}")
                rows.append((root / row[0], int(row[1])))
        except csv.Error as e:
            raise ValueError(f"{index}:{reader.line_num}: {e}") from None
        except UnicodeDecodeError:  # e.g. Excel's plain "CSV", in a legacy code page
            raise ValueError(f"{index}: not UTF-8 text (Excel: save as \"CSV UTF-8\")") from None
    if not rows:
        raise ValueError(f"{index}: no rows after the header")
    return rows


def load_image(path: Path) -> torch.Tensor:
    """The (H, W) uint8 image in a .npy file; raises OSError, or ValueError naming the file."""
    with open(path, "rb") as f:
        try:  # read_array reads .npy alone (np.load would open an .npz archive too)
            array = np.lib.format.read_array(f, allow_pickle=False)
        except Exception:  # numpy's parser raises many kinds: not .npy, cut short, a bad header
            raise ValueError(f"{path}: not a readable .npy file") from None
    if array.dtype != np.uint8 or array.ndim != 2 or array.size == 0:
        raise ValueError(f"{path}: not a non-empty 2-D uint8 array: {array.dtype} {array.shape}")
    return torch.from_numpy(array)


def write_example_folder(root: Path, n: int = 10, seed: int = 0) -> Path:  # label 1: bright
    generator = torch.Generator().manual_seed(seed)
    (root / "images").mkdir()
    with open(root / "index.csv", "w") as f:
        f.write("file,label\n")
        for i in range(n):
            image = torch.randint(0, 256, (8, 8), dtype=torch.uint8, generator=generator)
            np.save(root / f"images/{i}.npy", image.numpy())
            f.write(f"images/{i}.npy,{int(image.float().mean() > 127.5)}\n")
    return root

# %% [markdown]
# ## A map-style Dataset
# `__init__` reads the small index (`__len__` needs it); `__getitem__` loads one sample when asked
# (loading all in `__init__`, as torchvision's MNIST does, is right when they fit in memory), and
# applies `transform=`, a function from sample to sample (03_transforms.py). `for sample in dataset`
# calls `__getitem__(0)`, `(1)`, ... until an `IndexError`: one that never raises it (`idx % len`)
# makes the loop endless.

# %%
class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.rows = read_index(Path(root))  # [(path, label), ...]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        path, label = self.rows[idx]  # a list: past the end, an IndexError (which ends `for`)
        sample = {"image": load_image(path), "label": label}
        return self.transform(sample) if self.transform is not None else sample


if __name__ == "__main__":
    folder = tempfile.TemporaryDirectory()  # removed at the end, or at exit after a Ctrl-C
    root = args.root or write_example_folder(Path(folder.name), seed=args.seed)
    try:  # your --root: what the readers cannot use is usage and one error line, not a traceback
        dataset = FolderDataset(root)
        sample = dataset[0]  # __getitem__(0): reads one file
        samples = list(dataset)  # dataset[0], [1], ... until IndexError: reads (and keeps) them all
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(f"len(dataset): {len(dataset)}; dataset[0]: image {tuple(sample['image'].shape)} "
          f"{sample['image'].dtype}, label {sample['label']}; list(dataset): {len(samples)} items")

# %%
def to_float(sample: dict) -> dict:  # a transform: uint8 0..255 to float32 0..1
    return {**sample, "image": sample["image"].float() / 255}  # a new dict: the input is kept


if __name__ == "__main__":
    image = FolderDataset(root, transform=to_float)[0]["image"]
    print(f"with transform=to_float: {image.dtype}, in {image.min():.3f}..{image.max():.3f}")

# %% [markdown]
# ## An IterableDataset: a stream, no random access
# For records read one after another (a socket, a generator), implement `__iter__`; `__len__` is
# optional. DataLoader workers each run their own `__iter__`, and would each yield everything
# unless `__iter__` splits the work by `torch.utils.data.get_worker_info()`.

# %%
class FolderStream(IterableDataset):
    def __init__(self, root, transform=None):
        self.root, self.transform = Path(root), transform

    def __iter__(self):
        for path, label in read_index(self.root):
            sample = {"image": load_image(path), "label": label}
            yield self.transform(sample) if self.transform is not None else sample


if __name__ == "__main__":
    same = all(torch.equal(a["image"], b["image"]) and a["label"] == b["label"]
               for a, b in zip(FolderStream(root), samples, strict=True))
    print(f"FolderStream yields the samples of FolderDataset: {same}")

# %% [markdown]
# ## Train and validation: `random_split`
# It shuffles the indices and cuts them into the lengths given (or fractions, `[0.8, 0.2]`). A
# seeded `Generator` of its own: the split does not depend on what was drawn before. Its `Subset`s
# share the dataset's transform; give each part its own, or training's augmentation reaches
# validation: `Subset(FolderDataset(root, transform=augment), train.indices)` (augment: see 03).

# %%
def split(dataset: Dataset, num_val: int, seed: int) -> list[Subset]:
    generator = torch.Generator().manual_seed(seed)
    return random_split(dataset, [len(dataset) - num_val, num_val], generator=generator)


if __name__ == "__main__":
    train, val = split(dataset, max(1, len(dataset) // 5), args.seed)  # a fifth, at least 1
    print(f"random_split: train {len(train)}, val {len(val)}, val indices {sorted(val.indices)}")
    print(f"same seed, same split: {split(dataset, len(val), args.seed)[1].indices == val.indices}")
    folder.cleanup()
