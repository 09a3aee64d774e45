# %% [markdown]
# # 02 - A Dataset: how many samples there are, and how to load sample i
# A `Dataset` says how many samples it holds (`__len__`) and loads sample i when asked
# (`__getitem__`). A DataLoader (04) asks it both to make batches. Run: `python 02_dataset.py`
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
# The folder holds `index.csv`, whose lines after the header `file,label` name a file and a class,
# and one `.npy` file per image. `__init__` reads only the index, and `__getitem__` loads one file
# when asked, so the images are never all in memory at once. `allow_pickle=False` refuses a file of
# Python objects, because unpickling one can run code.
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
with open(root / "index.csv", "w", encoding="utf-8") as f:
    f.write("file,label\n")
    for i in range(10):  # 10 random 8x8 images; label 1 for a bright one, else 0
        image = torch.randint(0, 256, (8, 8), dtype=torch.uint8).numpy()
        np.save(root / f"{i}.npy", image)
        f.write(f"{i}.npy,{int(image.mean() > 127.5)}\n")
dataset = FolderDataset(root)
sample = dataset[0]  # loads 0.npy
print(f"len(dataset): {len(dataset)}; dataset[0]: image {tuple(sample['image'].shape)} "
      f"{sample['image'].dtype}, label {sample['label']}")

# %% [markdown]
# ## `for sample in dataset`, and its pitfall
# A `for` loop over a Dataset calls `dataset[0]`, `dataset[1]` and so on, and stops at the first
# `IndexError`. Pitfall: a `__getitem__` that never raises it, such as one that wraps around with
# `i % len(self)`, makes the loop endless.
# %%
class Wrapping(FolderDataset):
    def __getitem__(self, i):
        return super().__getitem__(i % len(self))  # the pitfall

samples = [s for s in dataset]  # calls dataset[0], dataset[1], ..., dataset[10]
try:
    dataset[10]
except IndexError as e:
    print(f"a for loop gave {len(samples)} samples and stopped at dataset[10]: IndexError: {e}")
same = torch.equal(Wrapping(root)[10]["image"], dataset[0]["image"])
print(f"Wrapping(root)[10] returns sample 0 instead ({same}), so a for loop over it never ends")

# %% [markdown]
# ## A transform, run on every load
# `transform=` takes a function from a sample to a sample (03_transforms.py has more). These
# images are (H, W); most of torchvision's transforms expect (C, H, W), and `image[None]` adds C.
# %%
def flip(sample):  # a mirror image, an augmentation for training
    return {"image": sample["image"].flip(-1), "label": sample["label"]}

flipped = FolderDataset(root, transform=flip)[0]["image"]
mirrored = torch.equal(flipped, sample["image"].flip(-1))
print(f"with transform=flip, dataset[0]'s image comes mirrored: {mirrored}")

# %% [markdown]
# ## Training and validation parts: `random_split`
# `random_split` shuffles the indices and cuts them into the fractions given; a seeded generator of
# its own gives the same split on every run. Pitfall: both parts are `Subset`s of one dataset, so
# a transform set for training reaches validation too. Give each part a dataset of its own.
# %%
generator = torch.Generator().manual_seed(SEED)
train_set, val_set = random_split(FolderDataset(root), [0.8, 0.2], generator=generator)
print(f"random_split: {len(train_set)} to train, {len(val_set)} to validate ({val_set.indices})")
train_set.dataset.transform = flip  # the pitfall: meant for training only
print(f"a transform set on train_set.dataset is val_set's too: {val_set.dataset.transform is flip}")
train_set = Subset(FolderDataset(root, transform=flip), train_set.indices)
val_set = Subset(FolderDataset(root), val_set.indices)
print(f"with a dataset each, val_set's transform is {val_set.dataset.transform}")
folder.cleanup()
