# %% [markdown]
# # 01 - A model: `nn.Module`, autograd and one training step
# A model is a class: `__init__` makes the layers and `forward` uses them. Autograd computes the
# gradients, and an optimizer applies them. Run: `python 01_model.py`

# %%
import pickle
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
torch.manual_seed(SEED)
device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
print(f"device: {device}")

# %% [markdown]
# ## A model is a class: layers in `__init__`, the computation in `forward`
# A layer assigned to `self` is registered: `parameters()`, `.to(device)` and `state_dict()` find
# it. Call `model(x)`, not `model.forward(x)`, because the call also runs the module's hooks.
# Pitfall: layers kept in a plain Python list are not registered, so `parameters()` misses them
# and the optimizer never updates them. `nn.ModuleList` registers each layer it holds.

# %%
class MLP(nn.Module):
    def __init__(self, in_features, hidden, out_features, dropout=0.2):
        super().__init__()  # first, because it creates the registry the layers go into
        self.fc1 = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x):  # x: (B, in_features)
        h = F.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(h))  # (B, out_features): logits, one score per class


model = MLP(4, 16, 3).to(device)  # .to() moves a module in place
print(model)
x = torch.randn(8, 4).to(device)  # a tensor's .to() returns the tensor on device: assign it
print(f"model(x): x {tuple(x.shape)} -> logits {tuple(model(x).shape)}; "
      f"{sum(p.numel() for p in model.parameters())} parameters (4*16 + 16 + 16*3 + 3)")
plain = nn.Module()
plain.layers = [nn.Linear(4, 8), nn.Linear(8, 3)]  # as `self.layers = [...]` in __init__
print(f"two layers in a plain list: parameters() finds {len(list(plain.parameters()))} tensors; "
      f"in an nn.ModuleList, {len(list(nn.ModuleList(plain.layers).parameters()))}")

# %% [markdown]
# ## Initial weights: `nn.init` through `model.apply`
# `model.apply(fn)` calls `fn` on every submodule, then on the model itself. Kaiming's normal init
# draws weights with standard deviation sqrt(2 / fan_in), where fan_in is the layer's number of
# inputs: it keeps the variance before each ReLU about the same from layer to layer.

# %%
def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:  # a layer made with bias=False has none
            nn.init.zeros_(module.bias)


model.apply(init_weights)
print(f"fc1.weight std {model.fc1.weight.std():.3f}, near Kaiming's sqrt(2/4) = 0.707 for fan_in 4")

# %% [markdown]
# ## Training: one step checked by hand, and `train()` and `eval()`
# `loss.backward()` fills the `.grad` of every parameter the loss depends on, and
# `optimizer.step()` updates each parameter from it: plain SGD subtracts lr times it. Take one
# linear layer y = w*x + b with w=3 and b=1, the input x=2, the target t=4 and the loss
# L = (y - t)^2. By hand, dL/dw = 2(y - t)x = 12 and dL/db = 2(y - t) = 6, and one SGD step with
# lr=0.1 gives w = 3 - 0.1*12 = 1.8 and b = 1 - 0.1*6 = 0.4.
#
# A new module is in train() mode, where dropout is on (and batch norm uses the batch's
# statistics). `model.eval()` turns that off and `model.train()` turns it back on, so call it
# before training goes on. `eval()` does not stop autograd: `torch.inference_mode()` does, so no
# graph is recorded, which saves memory and time (its tensors cannot enter autograd later).

# %%
layer = nn.Linear(1, 1)
w, b = layer.weight, layer.bias  # (1, 1) and (1,)
nn.init.constant_(w, 3.0)
nn.init.constant_(b, 1.0)
optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
optimizer.zero_grad()  # backward() adds to .grad, so reset it (to None) before each backward()
loss = F.mse_loss(layer(torch.tensor([[2.0]])), torch.tensor([[4.0]]))  # x and t, (B=1, 1)
loss.backward()
print(f"autograd: L = {loss.item():g}, dL/dw = {w.grad.item():g}, dL/db = {b.grad.item():g}")
optimizer.step()
print(f"after one SGD step: w = {w.item():.1f}, b = {b.item():.1f}")
print(f"in train() mode, two passes differ (dropout): {not torch.equal(model(x), model(x))}")
model.eval()
with torch.inference_mode():
    logits = model(x)
    loss = F.cross_entropy(logits, torch.arange(8, device=device) % 3)  # it takes logits
print(f"in eval() mode, two passes are equal: {torch.equal(logits, model(x))}")
print(f"evaluation: cross_entropy {loss.item():.4f}, no graph recorded: {loss.grad_fn is None}")

# %% [markdown]
# ## Saving and loading the weights
# Save the `state_dict`, a dict of tensors by name, and load it into a model built from your class.
# `torch.load` with `weights_only=True` (the default) is meant to keep a file from running code: it
# unpickles only tensors, plain Python values and a few safe types. Pitfall: `torch.save(model)`
# pickles the whole object, naming each class by import path: torch's `Linear` and, here,
# `__main__.MLP`. A safe load refuses them, and with `weights_only=False` a program loads the file
# only if its own `__main__` defines an `MLP`.

# %%
with tempfile.TemporaryDirectory() as folder:  # removed with what is in it at the end
    path, whole = f"{folder}/mlp.pt", f"{folder}/whole.pt"
    torch.save(model.state_dict(), path)
    clone = MLP(4, 16, 3).to(device).eval()  # eval(), as model is
    clone.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    print(f"state_dict loaded into a new MLP: the same outputs: {torch.equal(clone(x), model(x))}")
    torch.save(model, whole)  # the pitfall
    try:
        torch.load(whole, weights_only=True)
    except pickle.UnpicklingError:
        needs = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(whole))
        print(f"torch.load of the whole model: UnpicklingError; the file names {needs}")
