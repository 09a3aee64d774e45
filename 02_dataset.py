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
# The folder holds ten 8x8 grey images, one `.npy` file each, and `index.csv`, which names each
# file and its class. `__init__` reads only the index. `__getitem__` loads one file when it is
# asked for it, so the images never need to fit in memory together.
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
for i in range(10):  # random grey images; class 1 if brighter than mid-grey, else 0
    image = torch.randint(0, 256, (8, 8), dtype=torch.uint8)
    np.save(root / f"{i}.npy", image.numpy())
    lines.append(f"{i}.npy,{int(image.float().mean() > 127.5)}")
(root / "index.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
dataset = FolderDataset(root)
sample = dataset[0]  # loads 0.npy
print(f"len(dataset): {len(dataset)}; dataset[0]: label {sample['label']}, "
      f"image {tuple(sample['image'].shape)} {sample['image'].dtype}")

# %% [markdown]
# ## `for sample in dataset`, and its pitfall
# A `for` loop over a Dataset calls `dataset[0]`, `dataset[1]` and so on, and stops at the first
# `IndexError`, which `self.rows[i]` raises past the end. Pitfall: a `__getitem__` that never
# raises it, such as one that wraps around with `i % len(self)`, makes the loop endless.
# %%
count = 0
for sample in dataset:
    count += 1
try:
    dataset[10]
except IndexError as e:
    print(f"a for loop gave {count} samples, then dataset[10] raised IndexError: {e}")

class Wrapping(FolderDataset):  # the pitfall
    def __getitem__(self, i):
        return super().__getitem__(i % len(self))

wrapped = Wrapping(root)[10]["image"]
print(f"Wrapping(root)[10] is dataset[0] again: {torch.equal(wrapped, dataset[0]['image'])}")

# %% [markdown]
# ## A transform, run on every load
# `transform=` takes a function from a sample to a sample. These images are (H, W); the
# transforms in 03_transforms.py work on (C, H, W), which `image[None]` gives them.
# %%
def flip(sample):  # a mirror image: an augmentation for training
    return {"image": sample["image"].flip(-1), "label": sample["label"]}

flipped = FolderDataset(root, transform=flip)
print(f"row 0 of dataset[0]'s image: {dataset[0]['image'][0].tolist()}")
print(f"the same, with transform=flip: {flipped[0]['image'][0].tolist()}")

# %% [markdown]
# ## Training and validation parts: `random_split`
# `random_split` shuffles the indices and cuts them into the fractions given; a seeded generator
# of its own gives the same split each run. Pitfall: both parts are `Subset`s (a dataset and a
# list of indices) of one dataset, so a transform set for training reaches validation too.
# %%
generator = torch.Generator().manual_seed(0)
train_set, val_set = random_split(FolderDataset(root), [0.8, 0.2], generator=generator)
print(f"random_split: {len(train_set)} samples to train on; to validate on, {val_set.indices}")
train_set.dataset.transform = flip  # the pitfall: meant for training only
print(f"val_set's transform, after setting train_set's: {val_set.dataset.transform.__name__}")
train_set = Subset(FolderDataset(root, transform=flip), train_set.indices)  # the fix: a dataset
val_set = Subset(FolderDataset(root), val_set.indices)  # for each part, with the split's indices
print(f"with a dataset each, val_set's transform is {val_set.dataset.transform}")
folder.cleanup()
