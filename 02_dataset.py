# %% [markdown]
# # 02 - A Dataset: how many samples, and how to load sample i
# A map-style `Dataset` loads sample i in `__getitem__` and says how many there are in `__len__`,
# which a DataLoader's sampler needs. This one reads a folder lazily. Run: `python 02_dataset.py`

# %%
import csv
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, random_split

SEED = 0
torch.manual_seed(SEED)

# %% [markdown]
# ## A map-style Dataset over a folder
# `index.csv` lists the samples under the header `file,label`, a path from the folder and a class
# number each; each `.npy` file holds one (H, W) uint8 image. `__init__` reads only the index, and
# `__getitem__` loads one file when asked, so the images are never all in memory at once. A
# missing file raises `FileNotFoundError` with its path. `allow_pickle=False`, numpy's default
# said out loud, refuses an array of Python objects, because unpickling can run any code.

# %%
class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.root, self.transform = Path(root), transform
        # utf-8-sig drops the BOM that Excel writes; DictReader skips empty lines
        with open(self.root / "index.csv", newline="", encoding="utf-8-sig") as f:
            self.rows = [(row["file"], int(row["label"])) for row in csv.DictReader(f)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        file, label = self.rows[i]  # past the end, the list raises IndexError
        image = torch.from_numpy(np.load(self.root / file, allow_pickle=False))  # (H, W) uint8
        sample = {"image": image, "label": label}
        return self.transform(sample) if self.transform is not None else sample


folder = tempfile.TemporaryDirectory()  # removed by folder.cleanup() in the last cell
root = Path(folder.name)
with open(root / "index.csv", "w", encoding="utf-8") as f:  # 10 images; label 1: mean > 127.5
    f.write("file,label\n")
    for i in range(10):
        image = torch.randint(0, 256, (8, 8), dtype=torch.uint8)
        np.save(root / f"{i}.npy", image.numpy())
        f.write(f"{i}.npy,{int(image.float().mean() > 127.5)}\n")
dataset = FolderDataset(root)
sample = dataset[0]  # reads 0.npy
print(f"len(dataset): {len(dataset)}; dataset[0]: image {tuple(sample['image'].shape)} "
      f"{sample['image'].dtype}, label {sample['label']}")

# %% [markdown]
# ## `for sample in dataset`, and a transform
# `for sample in dataset` works without an `__iter__`: Python calls `dataset[0]`, `dataset[1]` and
# so on, and stops at the first `IndexError`. Pitfall: a `__getitem__` that never raises it, such as
# one that wraps around with `i % len(self)`, makes the loop endless. `transform=` takes a function
# from sample to sample (03_transforms.py), run on every load. A transform should return a new dict,
# so that a Dataset that keeps its samples in memory is not changed by a load. 03's images are
# (C, H, W), as most of torchvision's transforms expect: `image[None]` adds a grey image's channel.

# %%
class Wrapping(FolderDataset):
    def __getitem__(self, i):
        return super().__getitem__(i % len(self))


def flip(sample):  # a mirror image, as training's augmentation might make
    return {**sample, "image": sample["image"].flip(-1)}


print(f"list(dataset): {len(list(dataset))} samples, then dataset[10] raised IndexError")
print(f"a __getitem__ that wraps around: islice stopped its loop at "
      f"{len(list(itertools.islice(Wrapping(root), 25)))} samples; a plain for never ends")
mirrored = torch.equal(FolderDataset(root, transform=flip)[0]["image"], sample["image"].flip(-1))
print(f"with transform=flip, dataset[0]'s image is mirrored: {mirrored}")

# %% [markdown]
# ## Training and validation parts: `random_split`
# `random_split` shuffles the indices and cuts them into the fractions (or lengths) given. With a
# seeded `generator=` of its own, the split stays the same whatever was drawn before it.
# Pitfall: both parts are `Subset`s of one dataset and share its transform, so training's
# augmentation would reach validation. Give each part a dataset of its own, with the same indices.

# %%
generator = torch.Generator().manual_seed(SEED)
train_set, val_set = random_split(dataset, [0.8, 0.2], generator=generator)
print(f"random_split: train {len(train_set)}, val {len(val_set)}, val indices {val_set.indices}")
train_set.dataset.transform = flip  # meant for training only; train_set.dataset is dataset
print(f"flip, set on train_set.dataset, is val_set's too: {val_set.dataset.transform is flip}")
train_set = Subset(FolderDataset(root, transform=flip), train_set.indices)
val_set = Subset(FolderDataset(root), val_set.indices)
print(f"with a dataset each, val_set's transform is {val_set.dataset.transform}")
folder.cleanup()
