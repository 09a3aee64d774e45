# %% [markdown]
# # 01 - A model: `nn.Module`, one training step, and saving the weights
# A model is a class: `__init__` makes the layers and `forward` uses them. Autograd computes the
# gradients and an optimizer applies them. Run: `python 01_model.py`
# %%
import pickle
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
# The accelerator (a GPU, say) if one is usable; where none is, this gives None, so the CPU.
device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
print(f"device: {device}")

# %% [markdown]
# ## A model is a class
# A layer assigned to `self` in `__init__` is registered: `parameters()`, `.to(device)`,
# `state_dict()` and `print(model)` find it. Call `model(x)`, not `model.forward(x)`: the call also
# runs the module's hooks. `model.to(device)` moves the model in place; `x.to(device)` returns a
# tensor on the device and leaves `x` as it was, so assign it. Pitfall: layers in a plain Python
# list are not registered, so all of these skip them; `nn.ModuleList` registers them.
# %%
class MLP(nn.Module):
    def __init__(self, in_features, hidden, out_features, dropout=0.2):
        super().__init__()  # first: it sets up the registry that the layers go into
        self.fc1 = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x):  # x: (B, in_features)
        h = F.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(h))  # (B, out_features): one score (logit) per class

model = MLP(4, 16, 3).to(device)  # 4 inputs, 16 hidden units, 3 classes
print(model)
x = torch.randn(8, 4).to(device)  # a batch of 8 inputs, 4 numbers each
logits = model(x)
print(f"input {tuple(x.shape)} -> logits {tuple(logits.shape)}: 3 scores for each of 8 inputs")

class TwoLists(nn.Module):
    def __init__(self):
        super().__init__()
        self.plain = [nn.Linear(4, 3)]  # the pitfall: not registered
        self.registered = nn.ModuleList([nn.Linear(4, 3)])

names = [name for name, _ in TwoLists().named_parameters()]
print(f"named_parameters(): {names}; nothing from the plain list")

# %% [markdown]
# ## Initial weights: `nn.init` through `model.apply`
# Each layer starts with PyTorch's default weights; `model.apply(fn)` can replace them, calling `fn`
# on every submodule and then on the model itself. Kaiming's normal init is made for layers followed
# by a ReLU, like fc1 (fc2 gets it too, here): weights with std sqrt(2 / number of inputs).
# %%
def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:  # a layer made with bias=False has none
            nn.init.zeros_(module.bias)

model.apply(init_weights)
wide = nn.Linear(1000, 100).apply(init_weights)  # 100,000 weights: their std is close to exact
std = wide.weight.std().item()
print(f"init_weights on a layer with 1000 inputs: weight std {std:.4f}; sqrt(2/1000) = 0.0447")

# %% [markdown]
# ## One training step, checked by hand
# `loss.backward()` adds each parameter's gradient to its `.grad`, and `optimizer.step()` updates
# the parameters: plain SGD subtracts lr times the gradient. Take one linear layer y = w*x + b
# with w = 3 and b = 1, the input x = 2, the target 4 and the loss L = (y - 4)^2. By hand, y = 7,
# L = 9, dL/dw = 2(y - 4)x = 12 and dL/db = 2(y - 4) = 6. One SGD step with lr = 0.1 then gives
# w = 3 - 0.1*12 = 1.8 and b = 1 - 0.1*6 = 0.4.
# %%
layer = nn.Linear(1, 1)
nn.init.constant_(layer.weight, 3.0)
nn.init.constant_(layer.bias, 1.0)
optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
optimizer.zero_grad()  # backward() adds to .grad, so clear it before every backward()
loss = F.mse_loss(layer(torch.tensor([[2.0]])), torch.tensor([[4.0]]))  # the mean of one (y-4)^2
loss.backward()
w, b = layer.weight, layer.bias
print(f"autograd: L = {loss.item():g}, dL/dw = {w.grad.item():g}, dL/db = {b.grad.item():g}")
optimizer.step()
print(f"after one SGD step: w = {w.item():.1f}, b = {b.item():.1f}")

# %% [markdown]
# ## `train()` and `eval()`
# A new module is in training mode: dropout zeroes each value of `h` with probability 0.2, anew on
# every call, and scales the rest by 1/0.8. `model.eval()` turns dropout off, so evaluation is
# repeatable; it stays off until `model.train()`, which a training loop calls at its start.
# %%
equal_in_train = torch.equal(model(x), model(x))
print(f"train mode, two calls on the same x give the same logits: {equal_in_train}")
model.eval()
equal_in_eval = torch.equal(model(x), model(x))
print(f"eval mode, two calls on the same x give the same logits: {equal_in_eval}")

# %% [markdown]
# ## Saving and loading the weights
# Save the `state_dict`, a dict of the model's parameters and buffers by name, and load it into a
# new model of your class. `torch.load` loads only tensors, plain values and a few allowed types
# (`weights_only=True`, the default), which is meant to keep a file from running code. Pitfall:
# `torch.save(model)` pickles the whole object, naming its classes by import path, and that load
# refuses them. Even `weights_only=False` fails in a script that has no `MLP` in its `__main__`.
# %%
with tempfile.TemporaryDirectory() as folder:  # deleted, with its files, at the end of the block
    torch.save(model.state_dict(), f"{folder}/mlp.pt")
    clone = MLP(4, 16, 3).to(device).eval()  # eval(), as model is
    clone.load_state_dict(torch.load(f"{folder}/mlp.pt", map_location=device))
    same_logits = torch.equal(clone(x), model(x))
    print(f"a new MLP with the loaded state_dict gives the same logits: {same_logits}")
    torch.save(model, f"{folder}/whole.pt")  # the pitfall
    try:
        torch.load(f"{folder}/whole.pt")
    except pickle.UnpicklingError:
        classes = torch.serialization.get_unsafe_globals_in_checkpoint(f"{folder}/whole.pt")
        print(f"torch.load(whole model): UnpicklingError; the file names {sorted(classes)}")
