"""01_model.py: the model's shapes and parameters, registration, init, the hand-checked step,
dropout in train() and eval(), and saving."""
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import Script

m = Script("01_model.py")

KEY_LINES = [r"^device: (cpu|cuda|mps|xpu)",
             r"^  \(fc1\): Linear\(in_features=4, out_features=16, bias=True\)$",
             r"^input \(8, 4\) -> logits \(8, 3\): 3 scores for each of 8 inputs$",
             r"^named_parameters\(\): \['registered.0.weight', 'registered.0.bias'\]; nothing "
             r"from the plain list$",
             r"^init_weights on a layer with 1000 inputs: weight std 0\.04[45]\d; "
             r"sqrt\(2/1000\) = 0\.0447$",
             r"^autograd: L = 9, dL/dw = 12, dL/db = 6$",
             r"^after one SGD step: w = 1\.8, b = 0\.4$",
             r"^train mode, two calls on the same x give the same logits: False$",
             r"^eval mode, two calls on the same x give the same logits: True$",
             r"^a new MLP with the loaded state_dict gives the same logits: True$",
             r"^torch.load\(whole model\): UnpicklingError; the file names \['__main__.MLP', "
             r"'torch.nn.modules.dropout.Dropout', 'torch.nn.modules.linear.Linear'\]$"]


def test_forward_gives_one_row_of_logits_per_input_row():
    model = m.MLP(5, 7, 3)
    assert model(torch.randn(2, 5)).shape == (2, 3)
    assert [(name, tuple(p.shape)) for name, p in model.named_parameters()] == [
        ("fc1.weight", (7, 5)), ("fc1.bias", (7,)), ("fc2.weight", (3, 7)), ("fc2.bias", (3,))]


def test_forward_is_fc2_of_relu_of_fc1_when_dropout_is_off():
    model = m.MLP(4, 6, 2).eval()
    x = torch.randn(3, 4)
    expected = F.linear(F.relu(F.linear(x, model.fc1.weight, model.fc1.bias)),
                        model.fc2.weight, model.fc2.bias)
    torch.testing.assert_close(model(x), expected)


def test_a_plain_list_hides_its_layer_from_parameters_and_a_module_list_registers_it():
    module = m.TwoLists()
    assert isinstance(module.plain[0], nn.Linear)
    assert [name for name, _ in module.named_parameters()] == ["registered.0.weight",
                                                               "registered.0.bias"]
    assert [name for name in module.state_dict()] == ["registered.0.weight", "registered.0.bias"]


def test_the_lessons_step_is_the_hand_computed_one():
    assert m.w.grad.item() == 12 and m.b.grad.item() == 6  # 2(3*2 + 1 - 4)*2, 2(3*2 + 1 - 4)
    assert m.w.item() == pytest.approx(1.8) and m.b.item() == pytest.approx(0.4)


def test_init_weights_gives_kaimings_std_and_zero_biases():
    torch.manual_seed(0)
    model = m.MLP(256, 512, 10).apply(m.init_weights)
    assert not model.fc1.bias.any() and not model.fc2.bias.any()
    assert model.fc1.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert model.fc2.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)


def test_init_weights_leaves_other_layers_alone_and_takes_a_layer_without_bias():
    torch.manual_seed(0)
    layer, norm = nn.Linear(1000, 100, bias=False), nn.LayerNorm(100)
    nn.Sequential(layer, norm).apply(m.init_weights)
    assert layer.weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.02)
    assert torch.equal(norm.weight, torch.ones(100))


def test_dropout_is_on_in_train_mode_and_off_in_eval_mode():
    model, x = m.MLP(4, 64, 3, dropout=0.5), torch.randn(16, 4)
    assert not torch.equal(model.train()(x), model(x))
    assert torch.equal(model.eval()(x), model(x))


def test_a_state_dict_round_trip_gives_the_same_outputs_and_a_whole_model_is_refused(tmp_path):
    model, x = m.MLP(4, 8, 3).eval(), torch.randn(2, 4)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    clone = m.MLP(4, 8, 3).eval()
    clone.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(clone(x), model(x))
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(pickle.UnpicklingError, match="MLP"):
        torch.load(tmp_path / "whole.pt", weights_only=True)


def test_a_state_dict_of_another_shape_is_refused_with_the_layer_named():
    with pytest.raises(RuntimeError, match="size mismatch for fc1.weight"):
        m.MLP(4, 16, 3).load_state_dict(m.MLP(5, 16, 3).state_dict())
