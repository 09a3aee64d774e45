"""01_model.py: the module, nn.Sequential, ModuleList, init, autograd by hand, one step, saving."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import load_script

m = load_script("01_model.py")

KEY_LINES = [r"^device: (cpu|cuda|mps)", r"^x \(8, 4\) -> model\(x\) \(8, 3\)$",
             r"^  fc1.weight +\(16, 4\)$", r"^parameters: 131$",
             r"^nn.Sequential keys \['0.weight', '0.bias', '3.weight', '3.bias'\]",
             r"same outputs with MLP's weights: True$",
             r"^layers in a plain list: 0 parameters$", r"^layers in nn.ModuleList: 67 param",
             r"optimizer for the list version: ValueError: optimizer got an empty parameter",
             r"^fc1.weight: std of its 64 values 0.\d+ .*biases zero: True$",
             r"^L=9: dL/dw=12, dL/db=6 \(by hand: 12, 6\)$", r"^backward\(\) again: dL/dw=24 ",
             r"^nn.Linear\(4, 3\) on x \(8, 4\): autograd == chain rule: True$",
             r"^one SGD step \| loss ([\d.]+) -> ([\d.]+)$",
             r"^train\(\): two passes differ \(dropout\): True$",
             r"^eval\(\): +two passes equal: True$",
             r"^state_dict saved and loaded: same outputs: True$",
             r"^torch.load of a whole model: UnpicklingError: Unsupported global: "
             r"GLOBAL __main__.MLP$"]
BAD_RUN = (["--hidden", "0"], "argument --hidden: must be in 8..128, got 0")
FLAG_RUN = (["--hidden", "32"], r"^parameters: 259$")  # 4*32 + 32 + 32*3 + 3


def test_forward_gives_one_row_of_logits_per_input_row():
    model = m.MLP(4, 16, 3)
    assert model(torch.randn(5, 4)).shape == (5, 3)
    assert sum(p.numel() for p in model.parameters()) == 4 * 16 + 16 + 16 * 3 + 3


def test_layers_in_a_plain_list_are_not_registered():
    plain, listed = m.Stack([4, 8, 3], registered=False), m.Stack([4, 8, 3])
    assert list(plain.parameters()) == [] and list(plain.state_dict()) == []
    assert sum(p.numel() for p in listed.parameters()) == 4 * 8 + 8 + 8 * 3 + 3
    x = torch.randn(2, 4)
    assert plain(x).shape == listed(x).shape == (2, 3)  # both compute; only one can be trained


def test_init_weights_gives_kaiming_scale_and_zero_biases():
    torch.manual_seed(0)
    model = m.MLP(256, 512, 10).apply(m.init_weights)
    assert not model.fc1.bias.any() and not model.fc2.bias.any()
    assert model.fc1.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert model.fc2.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)


def test_chain_rule_by_hand_equals_autograd_for_a_batch():
    torch.manual_seed(1)
    layer, x, t = nn.Linear(4, 3), torch.randn(6, 4), torch.randn(6, 3)
    F.mse_loss(layer(x), t).backward()
    hand_w, hand_b = m.linear_mse_grads(x, t, layer.weight.detach(), layer.bias.detach())
    assert hand_w.shape == (3, 4) and hand_b.shape == (3,)
    torch.testing.assert_close(hand_w, layer.weight.grad)
    torch.testing.assert_close(hand_b, layer.bias.grad)


def test_chain_rule_by_hand_on_the_scalar_case():
    # y = 3*2 + 1 = 7, L = (7 - 4)^2 = 9, dL/dw = 2*(7-4)*2 = 12, dL/db = 2*(7-4) = 6
    dw, db = m.linear_mse_grads(torch.tensor([[2.0]]), torch.tensor([[4.0]]),
                                torch.tensor([[3.0]]), torch.tensor([1.0]))
    assert (dw.item(), db.item()) == (12.0, 6.0)


@pytest.mark.parametrize("hidden", [8, 16, 128])  # the smallest, default and largest --hidden
@pytest.mark.parametrize("seed", range(5))
def test_one_sgd_step_lowers_the_loss_and_clears_old_gradients(hidden, seed):
    torch.manual_seed(seed)
    model = m.MLP(4, hidden, 3).apply(m.init_weights)
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


def test_whole_model_pickle_is_refused_by_a_safe_load(tmp_path):
    message = m.whole_model_load_error(m.MLP(4, 8, 3), tmp_path / "whole.pt")
    assert message == "UnpicklingError: Unsupported global: GLOBAL 01_model.MLP"


def test_whole_model_save_of_a_class_pickle_cannot_find_is_reported_not_raised(tmp_path):
    """Imported by path and not registered in sys.modules, the class cannot be pickled at all."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("unregistered", m.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    message = module.whole_model_load_error(module.MLP(4, 8, 3), tmp_path / "whole.pt")
    assert message.startswith("PicklingError: ")


def test_defaults_and_auto_device(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    args = m.parse_args([])
    assert (args.device, args.seed, args.hidden) == (torch.device("cpu"), 0, 16)


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--hidden", "7"], "argument --hidden: must be in 8..128, got 7"),
    (["--hidden", "129"], "argument --hidden: must be in 8..128, got 129"),
    (["--hidden", "1e3"], "argument --hidden: invalid integer value: '1e3'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--steps", "3"], "unrecognized arguments: --steps 3"),
]
