"""01_model.py: the module, autograd against the chain rule, one step, modes, save and load."""
import pytest
import torch
from torch import nn

from conftest import load_script, main_error

m = load_script("01_model.py")


def test_forward_gives_one_row_of_logits_per_input_row():
    model = m.MLP(4, 16, 3)
    assert model(torch.randn(5, 4)).shape == (5, 3)


def test_parameter_count_is_weights_plus_biases():
    # fc1: 4*16 + 16, fc2: 16*3 + 3
    assert m.count_parameters(m.MLP(4, 16, 3)) == 4 * 16 + 16 + 16 * 3 + 3 == 131


def test_layers_in_a_plain_list_are_not_registered():
    assert m.count_parameters(m.ListOfLayers([4, 8, 3], registered=False)) == 0
    assert m.count_parameters(m.ListOfLayers([4, 8, 3], registered=True)) == 4 * 8 + 8 + 8 * 3 + 3


def test_autograd_matches_the_scalar_case_worked_by_hand():
    # y = 3*2 + 1 = 7, L = (7 - 4)^2 = 9, dL/dw = 2*(7-4)*2 = 12, dL/db = 2*(7-4) = 6
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(3.0)
        layer.bias.fill_(1.0)
    dw, db = m.autograd_gradients(layer, torch.tensor([[2.0]]), torch.tensor([[4.0]]))
    assert dw.item() == 12.0 and db.item() == 6.0
    hand_dw, hand_db = m.hand_gradients(torch.tensor([[2.0]]), torch.tensor([[4.0]]),
                                        layer.weight.detach(), layer.bias.detach())
    assert hand_dw.item() == 12.0 and hand_db.item() == 6.0


def test_hand_gradients_equal_autograd_for_a_batch():
    torch.manual_seed(1)
    layer, x, t = nn.Linear(4, 3), torch.randn(6, 4), torch.randn(6, 3)
    dw, db = m.autograd_gradients(layer, x, t)
    hand_dw, hand_db = m.hand_gradients(x, t, layer.weight.detach(), layer.bias.detach())
    assert dw.shape == hand_dw.shape == (3, 4) and db.shape == hand_db.shape == (3,)
    torch.testing.assert_close(dw, hand_dw)
    torch.testing.assert_close(db, hand_db)


def test_gradients_do_not_accumulate_between_calls():
    layer, x, t = nn.Linear(2, 1), torch.ones(1, 2), torch.zeros(1, 1)
    first = m.autograd_gradients(layer, x, t)[0].clone()
    torch.testing.assert_close(m.autograd_gradients(layer, x, t)[0], first)


def test_one_sgd_step_lowers_the_loss():
    torch.manual_seed(0)
    model = m.MLP(4, 16, 3)
    x, target = torch.randn(8, 4), torch.randint(0, 3, (8,))
    before = m.evaluate(model, x, target)
    m.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, target)
    assert m.evaluate(model, x, target) < before


def test_dropout_makes_train_mode_random_and_eval_mode_repeatable():
    torch.manual_seed(0)
    model, x = m.MLP(4, 64, 3, dropout=0.5), torch.randn(8, 4)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_evaluate_leaves_eval_mode_and_no_gradients():
    model = m.MLP(4, 8, 3)
    loss = m.evaluate(model, torch.randn(2, 4), torch.tensor([0, 1]))
    assert isinstance(loss, float) and loss > 0
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model, x = m.MLP(4, 8, 3).eval(), torch.randn(5, 4)
    clone = m.save_and_load(model, lambda: m.MLP(4, 8, 3), tmp_path)
    assert not torch.equal(m.MLP(4, 8, 3).eval()(x), model(x))  # a fresh model differs
    assert torch.equal(clone.eval()(x), model(x))
    assert (tmp_path / "model.pt").is_file()


def test_whole_model_pickle_is_refused_by_a_safe_load(tmp_path):
    assert m.load_whole_model_error(m.MLP(4, 8, 3), tmp_path) == (
        "UnpicklingError: Weights only load failed")


def test_auto_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert m.pick_device("auto") == torch.device("cpu")
    assert m.pick_device("cpu") == torch.device("cpu")


def test_missing_cuda_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        m.pick_device("cuda")
    assert "--device cuda: no CUDA GPU" in main_error(m, ["--device", "cuda"], capsys)


@pytest.mark.parametrize("flag", ["--batch-size", "--hidden"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_sizes_must_be_positive(flag, value, capsys):
    line = main_error(m, [flag, value], capsys)
    assert f"argument {flag}: must be a positive integer, got {value}" in line
