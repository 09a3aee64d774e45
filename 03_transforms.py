"""A transform is a function from a sample to a sample. Give it its parameters with a callable
class, a closure or functools.partial; compose transforms with torchvision's v2.Compose or three
lines of Python; and see which kinds survive the trip to a DataLoader worker.

Run:  python 03_transforms.py --seed 0
      python 03_transforms.py --check-workers   # also start real spawn workers (a few seconds)
"""
# %%
import argparse
import functools
import multiprocessing
import pickle
import re
import sys
import warnings

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

# %% [markdown]
# ## A sample and one transform, three ways
# A sample is a dict: `{"image": (C, H, W) tensor, "label": int}`. Each transform takes a
# sample and returns a new one, so transforms chain and the input is never changed in place.
#
# `normalize(sample, mean, std)` needs two parameters, but a Dataset calls `transform(sample)`.
# There are three ways to bind them: a class that stores them, a closure that captures them,
# and `functools.partial` that fills them in.

# %%
def normalize(sample: dict, mean: float, std: float) -> dict:
    return {**sample, "image": (sample["image"] - mean) / std}


class Normalize:
    """Callable class: parameters in __init__, the work in __call__, a __repr__ to print."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, sample: dict) -> dict:
        return normalize(sample, self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def make_normalize(mean: float, std: float):
    """Closure: the inner function remembers mean and std."""
    def normalize_sample(sample: dict) -> dict:
        return normalize(sample, mean, std)
    return normalize_sample


# %% [markdown]
# ## A random transform
# It draws from torch's global generator, so `torch.manual_seed` reproduces it, and each
# DataLoader worker (which torch seeds with `base_seed + worker_id`) draws differently.
# A transform with its own `random.Random` or numpy generator would get neither for free.

# %%
class AddNoise:
    def __init__(self, std: float):
        self.std = std

    def __call__(self, sample: dict) -> dict:
        image = sample["image"]
        return {**sample, "image": image + self.std * torch.randn(image.shape)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


# %% [markdown]
# ## Composing
# `v2.Compose` calls each transform in turn, torchvision's and ours alike. v2 transforms
# accept a dict: they transform the image in it and pass the label through. `ToImage` marks
# the tensor as the image and `ToDtype(float32, scale=True)` maps 0..255 to 0..1; together
# they replace the deprecated `ToTensor`.
#
# The same chain in plain Python is three lines. But `compose` returns a closure, and that
# matters below.

# %%
def compose(*fns):
    def composed(sample):
        for fn in fns:
            sample = fn(sample)
        return sample
    return composed


def make_image(size: int) -> torch.Tensor:
    """A uint8 (3, size, size) image, as torchvision.io.decode_image returns: a bright square
    top left on a dark gradient."""
    ramp = torch.linspace(0, 120, size).round().to(torch.uint8)
    image = ramp.expand(3, size, size).clone()  # (3, H, W)
    image[:, : size // 2, : size // 2] = 255
    return image


# %% [markdown]
# ## Why a class, when a closure is shorter?
# Output is the same, but a DataLoader started with the spawn or forkserver method (the
# default on macOS and Windows, and on Linux from Python 3.14) pickles the Dataset, its
# transform included, to send it to each worker. pickle stores a function by its importable
# name: a closure (`make_normalize.<locals>...`) or a lambda has none, so the loader fails
# before any worker runs. A class instance pickles as its class name plus its attributes; a
# partial of a module-level function as the function's name plus its arguments.

# %%
class Images(Dataset):
    """A few copies of one image, each passed through `transform`."""

    def __init__(self, image: torch.Tensor, transform, length: int = 4):
        self.image, self.transform, self.length = image, transform, length

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        return self.transform({"image": self.image, "label": idx % 2})


def run_in_worker(image: torch.Tensor, transform, context: str) -> str:
    """Load one batch through a DataLoader worker started with `context`; say what happened."""
    loader = DataLoader(Images(image, transform), batch_size=2, num_workers=1,
                        multiprocessing_context=context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about the error we print
        try:
            batch = next(iter(loader))
        except Exception as e:
            message = re.sub(r" at 0x[0-9a-f]+", "", str(e))  # drop memory addresses
            return f"fails: {type(e).__name__}: {message}"
    return f"works: batch image {tuple(batch['image'].shape)}"


def pickle_round_trip(image: torch.Tensor, transform) -> str:
    """What a worker receives: the unpickled copy. Does it give the same output?"""
    copy = pickle.loads(pickle.dumps(transform))
    sample = {"image": image.float(), "label": 0}
    same = torch.equal(copy(sample)["image"], transform(sample)["image"])
    return f"pickles; the copy gives the same output: {same}"


# %%
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):  # bad input: one line naming it, exit 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    methods = [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed for the random transforms")
    parser.add_argument("--image-size", type=positive_int, default=32, help="side of the image")
    parser.add_argument("--crop", type=positive_int, default=24, help="side after v2.RandomCrop")
    parser.add_argument("--start-method", default="spawn", choices=methods,
                        help="how DataLoader workers start in the pickling demo")
    parser.add_argument("--check-workers", action="store_true",
                        help="also run the picklable transforms in real workers (slower)")
    if argv is None and "ipykernel" in sys.modules:  # a Jupyter kernel's argv is its own
        argv = []
    args = parser.parse_args(argv)
    if args.crop > args.image_size:
        parser.error(f"--crop {args.crop} is larger than --image-size {args.image_size}")

    image = make_image(args.image_size)
    sample = {"image": image.float() / 255, "label": 1}
    print(f"image: {tuple(image.shape)} {image.dtype}, label {sample['label']}")

    as_class = Normalize(0.5, 0.25)
    as_closure = make_normalize(0.5, 0.25)
    as_partial = functools.partial(normalize, mean=0.5, std=0.25)
    outputs = [t(sample)["image"] for t in (as_class, as_closure, as_partial)]
    print(f"class {as_class!r}, closure, partial: identical output: "
          f"{all(torch.equal(outputs[0], o) for o in outputs)}")

    noise = AddNoise(0.1)
    torch.manual_seed(args.seed)
    first = noise(sample)["image"]
    torch.manual_seed(args.seed)
    again = noise(sample)["image"]
    print(f"{noise!r}: same seed, same noise: {torch.equal(first, again)}; "
          f"next draw differs: {not torch.equal(again, noise(sample)['image'])}")

    steps = [v2.ToImage(), v2.RandomCrop(args.crop), v2.ToDtype(torch.float32, scale=True),
             as_class, noise]
    torch.manual_seed(args.seed)
    composed = v2.Compose(steps)({"image": image, "label": 1})
    torch.manual_seed(args.seed)
    plain = compose(*steps)({"image": image, "label": 1})
    print(f"v2.Compose: image {tuple(composed['image'].shape)} {composed['image'].dtype}, "
          f"mean {composed['image'].mean():.4f}, label {composed['label']}")
    print(f"compose(): identical to v2.Compose: {torch.equal(composed['image'], plain['image'])}")

    print(f"sent to a DataLoader worker started with {args.start_method!r}:")
    for name, transform in [("class instance", as_class), ("partial", as_partial)]:
        print(f"  {name:16} {pickle_round_trip(image, transform)}")
    if args.check_workers:
        both = v2.Compose([as_class, as_partial])
        print(f"  {'both, in a worker':16} {run_in_worker(image, both, args.start_method)}")
    for name, transform in [("closure", as_closure), ("lambda", lambda s: normalize(s, 0.5, 0.25)),
                            ("compose()", compose(as_class))]:
        print(f"  {name:16} {run_in_worker(image, transform, args.start_method)}")


if __name__ == "__main__":
    main()
