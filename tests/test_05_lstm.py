"""05_lstm.py: the three-token example and its two mistakes, the character LSTM, generation."""
import pytest
import torch
import torch.nn.functional as F

from conftest import load_script, main_error

m = load_script("05_lstm.py")
TOKENS, TARGET = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])


@pytest.fixture(scope="module")
def tiny():
    lstm, linear, steps = m.train_tiny(seed=0)
    with torch.no_grad():
        logits = m.tiny_logits(lstm, linear, TOKENS)
    return logits, steps


def test_tiny_lstm_learns_to_predict_1_2_3(tiny):
    logits, steps = tiny
    assert logits.shape == (3, 4)
    assert logits.argmax(-1).tolist() == [1, 2, 3] and steps < 500


def test_nll_of_log_softmax_is_non_negative_and_equals_cross_entropy(tiny):
    logits, _ = tiny
    loss = F.nll_loss(F.log_softmax(logits, dim=-1), TARGET)
    assert loss >= 0
    torch.testing.assert_close(loss, F.cross_entropy(logits, TARGET))
    by_hand = -torch.log_softmax(logits, -1)[torch.arange(3), TARGET].mean()
    torch.testing.assert_close(loss, by_hand)


def test_nll_of_softmax_is_a_different_wrong_number(tiny):
    logits, _ = tiny
    wrong = F.nll_loss(F.softmax(logits, dim=-1), TARGET)
    torch.testing.assert_close(wrong, -F.softmax(logits, -1)[torch.arange(3), TARGET].mean())
    assert wrong < 0  # minus a mean probability: never a valid loss
    assert not torch.isclose(wrong, F.cross_entropy(logits, TARGET))


def test_a_target_of_shape_3_by_1_is_rejected(tiny):
    logits, _ = tiny
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        F.nll_loss(F.log_softmax(logits, dim=-1), TARGET.view(3, 1))


def test_char_lstm_gives_log_probabilities_of_shape_t_b_v():
    model = m.CharLSTM(vocab_size=5, hidden_size=8)
    log_probs, (h, c) = model(torch.randint(0, 5, (7, 3)))
    assert log_probs.shape == (7, 3, 5)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(7, 3))
    assert h.shape == c.shape == (1, 3, 8)


def test_initial_state_follows_the_model_not_a_global():
    model = m.CharLSTM(5, 8).to(dtype=torch.float64)
    h, c = model.init_state(batch_size=2)
    assert h.dtype == torch.float64 and h.shape == (1, 2, 8) and not h.any() and not c.any()
    h, _ = m.CharLSTM(5, 8).to("meta").init_state(2)  # a device other than the CPU, no GPU needed
    assert h.device.type == "meta"


def test_passing_no_state_equals_passing_the_zero_state():
    torch.manual_seed(0)
    model, tokens = m.CharLSTM(4, 6), torch.randint(0, 4, (5, 2))
    torch.testing.assert_close(model(tokens)[0], model(tokens, model.init_state(2))[0])


def test_encode_decode_round_trip():
    vocab = m.build_vocab("hello")
    assert vocab == ["e", "h", "l", "o"]
    assert m.encode("hello", vocab).tolist() == [1, 0, 2, 2, 3]
    assert m.decode(m.encode("hello", vocab).tolist(), vocab) == "hello"


def test_batches_are_windows_and_their_next_characters():
    data = torch.arange(50)
    x, y = m.get_batch(data, seq_len=6, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 4)
    assert torch.equal(y, x + 1)  # with data = arange, the next token is the index plus one
    assert torch.equal(x[1:], y[:-1]) and int(x.max()) < 49
    x2, _ = m.get_batch(data, 6, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def summary(out: str) -> tuple[float, float]:
    last = out.strip().splitlines()[-1]
    loss, accuracy = last.split()
    assert loss.startswith("loss=") and accuracy.startswith("accuracy=") and accuracy.endswith("%")
    return float(loss[5:]), float(accuracy[9:-1])


def test_default_run_learns_the_text_completely_and_recites_it(capsys):
    m.main([])
    out = capsys.readouterr().out
    loss, accuracy = summary(out)
    assert accuracy == 100.0 and 0 <= loss < 0.1
    assert "generated from 'T':\n" + m.TEXT in out  # greedy generation recites the rhyme


def test_a_text_file_is_learned(tmp_path, capsys):
    text = "the quick brown fox jumps over the lazy dog.\n"
    (tmp_path / "fox.txt").write_text(text, encoding="utf-8")
    m.main(["--text-file", str(tmp_path / "fox.txt"), "--seq-len", "16", "--steps", "200",
            "--prompt", "the q", "--sample-len", "20"])
    out = capsys.readouterr().out
    assert f"text: {len(text)} characters, vocabulary 29" in out  # 26 letters, space, '.', newline
    assert summary(out)[1] == 100.0
    assert "generated from 'the q':\nthe quick brown fox jumps\n" in out


def test_generation_has_the_requested_length_over_the_text_characters():
    torch.manual_seed(0)
    model, vocab = m.CharLSTM(6, 8), m.build_vocab("abcdef")
    for temperature in (None, 1.5):
        ids = m.generate(model, m.encode("ab", vocab), 25, temperature,
                         torch.Generator().manual_seed(1))
        assert len(ids) == 25 and set(m.decode(ids, vocab)) <= set(vocab)


def test_sampling_is_reproduced_by_its_generator_and_greedy_needs_none():
    torch.manual_seed(0)
    model, prompt = m.CharLSTM(6, 8), torch.tensor([0, 1])
    a = m.generate(model, prompt, 30, 2.0, torch.Generator().manual_seed(1))
    assert a == m.generate(model, prompt, 30, 2.0, torch.Generator().manual_seed(1))
    assert a != m.generate(model, prompt, 30, 2.0, torch.Generator().manual_seed(2))
    assert m.generate(model, prompt, 30) == m.generate(model, prompt, 30)


def test_same_seed_prints_the_same_another_seed_does_not(capsys):
    def run(seed):
        m.main(["--steps", "20", "--seed", str(seed), "--temperature", "1.0"])
        return [line for line in capsys.readouterr().out.splitlines() if "tokens/s" not in line]
    first = run(3)
    assert run(3) == first
    assert run(4) != first


@pytest.fixture
def text_file(tmp_path):
    def write(content: bytes):
        path = tmp_path / "text.txt"
        path.write_bytes(content)
        return str(path)
    return write


def test_text_file_problems_are_one_line(text_file, tmp_path, capsys):
    missing = str(tmp_path / "missing.txt")
    assert f"--text-file {missing}: no such file" in main_error(m, ["--text-file", missing], capsys)
    assert "the file is empty" in main_error(m, ["--text-file", text_file(b"")], capsys)
    line = main_error(m, ["--text-file", text_file(b"caf\xe9 latin-1")], capsys)
    assert "not UTF-8 text (byte 0xe9 at offset 3)" in line
    line = main_error(m, ["--text-file", text_file(b"short text"), "--seq-len", "10"], capsys)
    assert "the text has 10 characters; --seq-len 10 needs at least 11" in line
    assert "Is a directory" in main_error(m, ["--text-file", str(tmp_path)], capsys)


def test_prompt_outside_the_vocabulary_is_named(capsys):
    line = main_error(m, ["--prompt", "Tw#nkle@"], capsys)
    assert "--prompt 'Tw#nkle@': characters not in the text: '#@'" in line
    assert "--prompt must not be empty" in main_error(m, ["--prompt", ""], capsys)


@pytest.mark.parametrize("flag", ["--steps", "--hidden-size", "--batch-size", "--seq-len",
                                  "--sample-len", "--lr", "--temperature"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_sizes_steps_rates_and_temperature_must_be_positive(flag, value, capsys):
    assert f"argument {flag}: must be positive" in main_error(m, [flag, value], capsys)


def test_missing_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--device cuda: no CUDA GPU" in main_error(m, ["--device", "cuda"], capsys)


def test_a_long_text_is_scored_on_its_start(monkeypatch, capsys):
    monkeypatch.setattr(m, "EVAL_CHARS", 40)
    m.main(["--steps", "5"])
    assert "next-character accuracy on the first 40 characters: " in capsys.readouterr().out
