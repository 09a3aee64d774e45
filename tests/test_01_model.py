"""01_model.py: the module and its parameters, registration, init, autograd by hand, one
training step, evaluation, and saving."""
import pytest
import torch
from torch import nn

from conftest import error_line, load_script

m = load_script("01_model.py")

KEY_LINES = [r"^device: (cpu|cuda|mps)", r"^x \(8, 4\) -> model\(x\) \(8, 3\)$",
             r"^  fc1.weight +\(16, 4\)$", r"^parameters: 131$",  # 4*16 + 16 + 16*3 + 3
             r"^layers in a plain list: 0 parameters$",
             r"^layers in nn.ModuleList: 67 parameters$",  # 4*8 + 8 + 8*3 + 3
             r"optimizer for the plain list: ValueError: optimizer got an empty parameter",
             r"^fc1.weight: std 0.\d+ of 64 values, sqrt\(2/4\) = 0.707; biases zero: True$",
             r"^L=9: dL/dw=12, dL/db=6 \(by hand: 12, 6\)$", r"^backward\(\) again: dL/dw=24 ",
             r"^one SGD step \| loss \d.\d{4} -> \d.\d{4}$",
             r"^train\(\): two passes differ \(dropout\): True$",
             r"^eval\(\): +two passes equal: True$",
             r"^state_dict saved and loaded: same outputs: True$",
             r"^torch.load of a whole model: UnpicklingError, it needs \['__main__.MLP', "
             r"'torch.nn.modules.dropout.Dropout', 'torch.nn.modules.linear.Linear'\]$"]
BAD_RUN = (["--device", "tpu"], "argument --device: invalid choice: 'tpu'")
FLAG_RUN = (["--seed", "1"], r"^one SGD step \| loss \d\.\d{4} -> \d\.\d{4}$")


def test_forward_gives_one_row_of_logits_per_input_row():
    model = m.MLP(4, 16, 3)
    assert model(torch.randn(5, 4)).shape == (5, 3)
    assert sum(p.numel() for p in model.parameters()) == 4 * 16 + 16 + 16 * 3 + 3
    assert [name for name, _ in model.named_parameters()] == [
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_init_weights_gives_kaiming_scale_and_zero_biases():
    torch.manual_seed(0)
    model = m.MLP(256, 512, 10).apply(m.init_weights)
    assert not model.fc1.bias.any() and not model.fc2.bias.any()
    assert model.fc1.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert model.fc2.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)


def test_init_weights_works_on_a_layer_without_bias():
    torch.manual_seed(0)
    layer = nn.Linear(1000, 100, bias=False)
    nn.Sequential(layer, nn.ReLU()).apply(m.init_weights)
    assert layer.bias is None
    assert layer.weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_one_sgd_step_lowers_the_loss_and_clears_old_gradients(seed):
    torch.manual_seed(seed)
    model = m.MLP(4, 16, 3).apply(m.init_weights)
    x, target = torch.randn(8, 4), torch.randint(0, 3, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # the lesson's rate
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e6)  # stale gradients that zero_grad() must clear
    before = m.evaluate(model, x, target)
    m.train_step(model, optimizer, x, target)
    assert m.evaluate(model, x, target) < before
    assert all(p.grad.abs().max() < 1e3 for p in model.parameters())


def test_evaluate_switches_dropout_off_and_records_no_graph():
    torch.manual_seed(0)
    model, x, target = m.MLP(4, 64, 3, dropout=0.5), torch.randn(8, 4), torch.tensor([0] * 8)
    assert m.evaluate(model, x, target) == m.evaluate(model, x, target)
    assert not model.training and all(p.grad is None for p in model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x), target)  # model is in eval mode now
    assert m.evaluate(model, x, target) == pytest.approx(loss.item())


def test_a_device_that_is_not_there_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available: None)
    assert error_line("01_model.py", ["--device", "cuda"], monkeypatch, capsys).startswith(
        "argument --device: invalid choice: 'cuda' (choose from ")
