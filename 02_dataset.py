# %% [markdown]
# # 02 - A Dataset: how many samples there are, and how to load sample i
# A `Dataset` says how many samples it holds (`__len__`) and loads sample i when asked
# (`__getitem__`). A DataLoader (04) calls both to make batches. Run: `python 02_dataset.py`
# %%
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, random_split

SEED = 0
torch.manual_seed(SEED)

# %% [markdown]
# ## A Dataset over a folder of files
# The folder holds one `.npy` file per image and `index.csv`, whose lines after the header
# `file,label` name a file and its class. `__init__` reads only the index, and `__getitem__` loads
# one file when asked, so the images need not fit in memory together. `allow_pickle=False`, numpy's
# default written out, refuses a file of Python objects, because unpickling one can run code.
# %%
class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.root = Path(root)
        self.transform = transform
        # "utf-8-sig" also reads a file that starts with a byte-order mark, as Excel writes it
        with open(self.root / "index.csv", newline="", encoding="utf-8-sig") as f:
            self.rows = [(row["file"], int(row["label"])) for row in csv.DictReader(f)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        file, label = self.rows[i]  # past the end, the list raises IndexError
        image = np.load(self.root / file, allow_pickle=False)  # (H, W) uint8: a grey image
        sample = {"image": torch.from_numpy(image), "label": label}
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

folder = tempfile.TemporaryDirectory()  # deleted by folder.cleanup() at the end
root = Path(folder.name)
lines = ["file,label"]
for i in range(10):  # 10 random 8x8 images; label 1 for a bright one, else 0
    image = torch.randint(0, 256, (8, 8), dtype=torch.uint8).numpy()
    np.save(root / f"{i}.npy", image)
    lines.append(f"{i}.npy,{int(image.mean() > 127.5)}")
(root / "index.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"the folder: 10 .npy files and index.csv, which starts {lines[:3]}")
dataset = FolderDataset(root)
image = dataset[0]["image"]  # dataset[0] loads 0.npy
print(f"len(dataset): {len(dataset)}; dataset[0]: image {tuple(image.shape)} {image.dtype}")

# %% [markdown]
# ## `for sample in dataset`, and its pitfall
# A `for` loop over a Dataset calls `dataset[0]`, `dataset[1]` and so on, and stops at the first
# `IndexError`. Pitfall: a `__getitem__` that never raises it, such as one that wraps around with
# `i % len(self)`, makes such a loop endless. (A DataLoader still stops: it counts with `__len__`.)
# %%
class Wrapping(FolderDataset):
    def __getitem__(self, i):
        return super().__getitem__(i % len(self))  # the pitfall

count = 0
for sample in dataset:  # dataset[0], dataset[1], ..., until dataset[10] raises IndexError
    count += 1
print(f"a for loop over the dataset: {count} samples, and then dataset[10] raised IndexError")
same = torch.equal(Wrapping(root)[10]["image"], image)
print(f"Wrapping(root)[10] is sample 0 again: {same}; with no IndexError, its loop never ends")

# %% [markdown]
# ## A transform, run on every load
# `transform=` takes a function from a sample to a sample. These images are (H, W); the transforms
# of 03_transforms.py work on (C, H, W), and `image[None]` adds C = 1.
# %%
def flip(sample):  # a mirror image, an augmentation for training
    return {"image": sample["image"].flip(-1), "label": sample["label"]}

flipped = FolderDataset(root, transform=flip)[0]["image"]
mirrored = torch.equal(flipped, image.flip(-1))
print(f"with transform=flip, dataset[0]'s image comes mirrored: {mirrored}")

# %% [markdown]
# ## Training and validation parts: `random_split`
# `random_split` shuffles the indices and cuts them into the fractions given, as two `Subset`s (a
# dataset and a list of its indices); a seeded generator of its own gives the same split each run.
# Pitfall: both parts share one dataset, so a transform set for training reaches validation too.
# Give each part a dataset of its own.
# %%
generator = torch.Generator().manual_seed(SEED)
train_set, val_set = random_split(FolderDataset(root), [0.8, 0.2], generator=generator)
print(f"random_split: {len(train_set)} to train, {len(val_set)} to validate: {val_set.indices}")
train_set.dataset.transform = flip  # the pitfall: meant for training only
print(f"a transform set on train_set.dataset is val_set's too: {val_set.dataset.transform is flip}")
train_set = Subset(FolderDataset(root, transform=flip), train_set.indices)
val_set = Subset(FolderDataset(root), val_set.indices)
print(f"with a dataset each, val_set's transform is {val_set.dataset.transform}")
folder.cleanup()
