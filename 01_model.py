# %% [markdown]
# # 01 - A model: `nn.Module`, autograd and one training step
# A model is a class whose `__init__` makes the layers and whose `forward` uses them. Autograd
# computes the gradients, an optimizer applies them, and a `state_dict` saves the weights.
# Run: `python 01_model.py` (try `--hidden 32`, `--seed 1`, `--device cuda`; `--help` lists all)

# %%
import argparse
import pickle
import re
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def int_in(lo: int, hi: int):
    """An argparse type: an integer from lo to hi."""
    def integer(text: str) -> int:
        value = int(text)  # not a number: argparse says "invalid integer value"
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    return integer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A model, autograd and one training step.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="auto: the available accelerator, else the CPU")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="0..2**32-1")
    parser.add_argument("--hidden", type=int_in(8, 128), default=16, help="8..128")
    args = parser.parse_args(argv)
    # None where no accelerator is usable (without the check it can name cuda on a CPU machine)
    found = torch.accelerator.current_accelerator(check_available=True)
    if args.device == "auto":
        args.device = found or torch.device("cpu")
    elif args.device != "cpu" and (found is None or found.type != args.device):
        parser.error(f"--device {args.device}: not available on this machine")
    args.device = torch.device(args.device)
    return args


if __name__ == "__main__":  # demo code runs only when this file is run, never on import
    # Flags come from `python 01_model.py --x` or `%run 01_model.py --x`; in a notebook, the
    # kernel's argv is not ours, so the defaults apply.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])
    sys.excepthook = lambda kind, *info: (  # Ctrl-C: one line, not a traceback
        print("interrupted", file=sys.stderr) if issubclass(kind, KeyboardInterrupt)
        else sys.__excepthook__(kind, *info))
    device = args.device
    torch.manual_seed(args.seed)
    print(f"device: {device}")

# %% [markdown]
# ## A model is a class: layers in `__init__`, the computation in `forward`
# A layer assigned to `self` is registered: `parameters()`, `.to(device)` and `state_dict()` find
# it there. Call the model, `model(x)`, rather than `model.forward(x)`: the call also runs
# PyTorch's hooks. Move the model to the device before you make an optimizer for it.

# %%
class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.2):
        super().__init__()  # first: it sets up the registry the layers below go into
        self.fc1 = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)  # active in train() mode only
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_features)
        h = F.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(h))  # (B, out_features): logits, one score per class


if __name__ == "__main__":
    model = MLP(4, args.hidden, 3).to(device)
    x = torch.randn(8, 4).to(device)  # a batch of 8 rows of 4 features
    print(f"x {tuple(x.shape)} -> model(x) {tuple(model(x).shape)}")
    print(model)
    for name, p in model.named_parameters():
        print(f"  {name:10} {tuple(p.shape)}")
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")

# %% [markdown]
# When `forward` is just "one layer after another", `nn.Sequential` builds the same model without
# a class. Its `state_dict` keys are positions (`0.weight`) instead of attribute names
# (`fc1.weight`), but the layers come in the same order with the same shapes, so MLP's weights
# can be copied across pair by pair.

# %%
if __name__ == "__main__":
    seq = nn.Sequential(nn.Linear(4, args.hidden), nn.ReLU(), nn.Dropout(0.2),
                        nn.Linear(args.hidden, 3)).to(device)
    seq.load_state_dict(dict(zip(seq.state_dict(), model.state_dict().values())))  # by order
    print(f"nn.Sequential keys {list(seq.state_dict())}")
    seq.eval(), model.eval()  # dropout off in both, so the outputs can be compared
    print(f"  same outputs with MLP's weights: {torch.equal(seq(x), model(x))}")

# %% [markdown]
# Pitfall: layers kept in a plain Python list are invisible to the module: `parameters()`,
# `state_dict()` and `.to()` skip them. With no other layers the optimizer complains; beside
# registered layers they silently never train. `nn.ModuleList` registers them.

# %%
class Stack(nn.Module):
    def __init__(self, sizes: list[int], registered: bool = True):
        super().__init__()
        layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
        self.layers = nn.ModuleList(layers) if registered else layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


if __name__ == "__main__":
    for registered in (False, True):
        count = sum(p.numel() for p in Stack([4, 8, 3], registered).parameters())
        print(f"layers in {'nn.ModuleList' if registered else 'a plain list'}: {count} parameters")
    try:
        torch.optim.SGD(Stack([4, 8, 3], registered=False).parameters(), lr=0.1)
    except ValueError as e:
        print(f"  an optimizer for the list version: ValueError: {e}")

# %% [markdown]
# ## Initial weights: `nn.init` and `model.apply`
# `nn.Linear` starts uniform in +-1/sqrt(fan_in). To choose another scheme, write a function for
# one module and let `model.apply` call it on every submodule. Kaiming's normal init
# (std = sqrt(2 / fan_in)) keeps the variance of activations steady through ReLU layers.

# %%
def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


if __name__ == "__main__":
    model.apply(init_weights)  # in place, on whatever device the model is
    print(f"fc1.weight: std of its {model.fc1.weight.numel()} values {model.fc1.weight.std():.3f}"
          f" (sqrt(2/4) = {(2 / 4) ** 0.5:.3f}), "
          f"biases zero: {not model.fc1.bias.any() and not model.fc2.bias.any()}")

# %% [markdown]
# ## Autograd, checked by hand
# `loss.backward()` fills `.grad` of each tensor the loss depends on that you made with
# `requires_grad=True` (a parameter is one).
# By hand, for y = w*x + b and L = (y - t)^2 with x=2, w=3, b=1, t=4: y = 7, L = 9,
# dL/dw = 2(y - t)x = 12 and dL/db = 2(y - t) = 6. A second `backward()` adds to `.grad`
# rather than replacing it, which is why each training step starts with `zero_grad()`.

# %%
if __name__ == "__main__":
    w = torch.tensor(3.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    loss = (w * 2.0 + b - 4.0) ** 2
    loss.backward()
    print(f"L={loss.item():g}: dL/dw={w.grad.item():g}, dL/db={b.grad.item():g} (by hand: 12, 6)")
    ((w * 2.0 + b - 4.0) ** 2).backward()  # again, with no zero_grad() in between
    print(f"backward() again: dL/dw={w.grad.item():g} (12 + 12: gradients add up)")

# %% [markdown]
# The same rule for a layer, y = x @ W.T + b, on a batch x of shape (B, in), with L the mean of
# (y - t)^2 over all B*out outputs: dL/dy = 2(y - t) / y.numel(), then dL/dW = (dL/dy).T @ x
# and dL/db = (dL/dy).sum(0).

# %%
def linear_mse_grads(x, t, weight, bias):
    y = x @ weight.T + bias  # (B, out)
    dy = 2 * (y - t) / y.numel()  # (B, out)
    return dy.T @ x, dy.sum(0)  # (out, in), (out,)


if __name__ == "__main__":
    layer, t = nn.Linear(4, 3).to(device), torch.randn(8, 3).to(device)
    F.mse_loss(layer(x), t).backward()
    by_hand = linear_mse_grads(x, t, layer.weight.detach(), layer.bias.detach())
    same = all(torch.allclose(a, h) for a, h in zip((layer.weight.grad, layer.bias.grad), by_hand))
    print(f"nn.Linear(4, 3) on x {tuple(x.shape)}: autograd == chain rule: {same}")

# %% [markdown]
# ## One training step, and evaluation
# The order of a step: clear the old gradients, compute the loss, backpropagate, let the
# optimizer move the parameters. `train()` turns dropout on (and makes batch norm use batch
# statistics); `eval()` turns that off so results repeat. `eval()` does not stop autograd:
# `torch.inference_mode()` does, recording no graph, which saves time and memory.

# %%
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x, target) -> float:
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), target)  # takes logits: it applies log_softmax itself
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.inference_mode()
def evaluate(model: nn.Module, x, target) -> float:
    model.eval()
    return F.cross_entropy(model(x), target).item()


if __name__ == "__main__":
    target = torch.randint(0, 3, (8,)).to(device)  # (B,): one class per row
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = evaluate(model, x, target)
    train_step(model, optimizer, x, target)
    print(f"one SGD step | loss {before:.4f} -> {evaluate(model, x, target):.4f}")
    model.train()
    print(f"train(): two passes differ (dropout): {not torch.equal(model(x), model(x))}")
    model.eval()
    print(f"eval():  two passes equal: {torch.equal(model(x), model(x))}")

# %% [markdown]
# ## Saving and loading the weights
# Save the `state_dict`, a dict of tensors; to load, build the model from your class and load the
# tensors into it. `map_location` puts them on your device, whatever device saved them.
# `weights_only=True` (the default since torch 2.6) unpickles only tensors, numbers, strings and
# plain containers, so a file cannot run code, as long as that unpickler has no known hole:
# torch 2.10 fixed one (CVE-2026-24747). Even so, load only files you trust. To resume training
# later, save `optimizer.state_dict()` beside the model's.
#
# Pitfall: `torch.save(model)` pickles the whole object, which names your class (`__main__.MLP`)
# and needs it importable to load again; a safe load refuses it.

# %%
def whole_model_load_error(model: nn.Module, path: Path) -> str:
    try:
        torch.save(model, path)  # pickles the object, not just its tensors
        torch.load(path, weights_only=True)
    except pickle.PickleError as e:  # the safe load's refusal; its long message names the class
        found = re.search(r"Unsupported global: GLOBAL \S+", str(e))
        return f"{type(e).__name__}: {found[0] if found else str(e).splitlines()[0]}"
    return "no error"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:  # removed afterwards, also after a Ctrl-C
        path = Path(folder) / "mlp.pt"
        torch.save(model.state_dict(), path)
        clone = MLP(4, args.hidden, 3).to(device)
        clone.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        same = torch.equal(clone.eval()(x), model.eval()(x))
        print(f"state_dict saved and loaded: same outputs: {same}")
        refused = whole_model_load_error(model, Path(folder) / "whole.pt")
        print(f"torch.load of a whole model: {refused}")
