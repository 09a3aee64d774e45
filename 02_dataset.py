# %% [markdown]
# # 02 - A Dataset: how many samples there are, and how to load sample i
# A `Dataset` says how many samples it holds (`__len__`) and loads sample i when asked
# (`__getitem__`). A DataLoader calls both to make batches. Run: `python 02_dataset.py`
# %%
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, random_split

torch.manual_seed(0)

# %% [markdown]
# ## A Dataset that reads a folder lazily
# The folder holds ten 8x8 grey images, one `.npy` file each, and `index.csv`: a header
# `file,label`, then a line such as `0.npy,1` for each file. `__init__` reads only the index.
# `__getitem__` loads one file when it is asked for it, so the images need not fit in memory.
# %%
class FolderDataset(Dataset):
    def __init__(self, root, transform=None):
        self.root = Path(root)
        self.transform = transform
        # "utf-8-sig" also reads an index that starts with a byte-order mark, as Excel writes
        with open(self.root / "index.csv", newline="", encoding="utf-8-sig") as f:
            self.rows = [(row["file"], int(row["label"])) for row in csv.DictReader(f)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        file, label = self.rows[i]
        # allow_pickle=False (numpy's default) refuses pickled Python objects: they can run code
        image = np.load(self.root / file, allow_pickle=False)  # (H, W) uint8
        sample = {"image": torch.from_numpy(image), "label": label}
        return sample if self.transform is None else self.transform(sample)

folder = tempfile.TemporaryDirectory()  # deleted by folder.cleanup() at the end
root = Path(folder.name)
lines = ["file,label"]
for i in range(10):
    image = torch.randint(0, 256, (8, 8), dtype=torch.uint8)  # a random grey image
    label = int(image.float().mean() > 127.5)  # class 1 if brighter than mid-grey, else 0
    np.save(root / f"{i}.npy", image.numpy())
    lines.append(f"{i}.npy,{label}")
(root / "index.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
dataset = FolderDataset(root)
first = dataset[0]  # loads 0.npy
print(f"len(dataset): {len(dataset)}; dataset[0]: label {first['label']}, {first['image'].shape}")

# %% [markdown]
# ## `for sample in dataset`, and its pitfall
# A `for` loop over a Dataset calls `dataset[0]`, `dataset[1]` and so on, and stops at the first
# `IndexError`, which `self.rows[i]` raises past the end. Pitfall: a `__getitem__` that never
# raises it, such as one that wraps around with `i % len(self)`, makes the loop endless. (A
# DataLoader still stops, because its sampler counts with `__len__`.)
# %%
samples = list(dataset)  # iterates as a for loop does: dataset[0], dataset[1], ..., dataset[10]
try:
    dataset[10]
except IndexError as e:
    print(f"list(dataset) stops at {len(samples)} samples: dataset[10] raises IndexError: {e}")

class Wrapping(FolderDataset):  # the pitfall
    def __getitem__(self, i):
        return super().__getitem__(i % len(self))

tenth = Wrapping(root)[10]["image"]  # no IndexError: sample 0 again
print(f"Wrapping(root)[10] equals dataset[0]: {torch.equal(tenth, first['image'])}")

# %% [markdown]
# ## A transform, run on every load
# `transform=` takes a function from a sample to a sample. These images are (H, W); those in
# 03_transforms.py are (C, H, W), which some of torchvision's transforms need: `image[None]` adds C.
# %%
def flip(sample):  # a mirror image, as a random augmentation makes for some samples
    return {"image": sample["image"].flip(-1), "label": sample["label"]}

flipped = FolderDataset(root, transform=flip)
print(f"row 0 of dataset[0]'s image: {first['image'][0].tolist()}")
print(f"the same, with transform=flip, reversed: {flipped[0]['image'][0].tolist()}")

# %% [markdown]
# ## Training and validation parts: `random_split`
# `random_split` shuffles the indices and cuts them into the fractions given. Its own seeded
# generator keeps the split the same whatever other code drew before. Pitfall: both parts are
# `Subset`s (a dataset and indices) of one dataset, so a transform set for training reaches both:
# give each part a dataset of its own.
# %%
generator = torch.Generator().manual_seed(0)
train_set, val_set = random_split(FolderDataset(root), [0.8, 0.2], generator=generator)
print(f"random_split: train on {train_set.indices}, validate on {val_set.indices}")
train_set.dataset.transform = flip  # the pitfall: meant for training only
print(f"val_set's transform is now flip too: {val_set.dataset.transform is flip}")
train_set = Subset(FolderDataset(root, transform=flip), train_set.indices)
val_set = Subset(FolderDataset(root), val_set.indices)
print(f"with a dataset each, val_set's transform is {val_set.dataset.transform}")
folder.cleanup()
