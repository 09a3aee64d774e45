"""05_lstm.py: three tokens and two mistakes, the counting text held out against a bigram
baseline, training that carries the state, evaluation, generation, and bad input."""
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import ctrl_c_at_step, error_line, load_script, run_in_process

m = load_script("05_lstm.py")

KEY_LINES = [r"^3 tokens, 300 steps: loss 0\.00\d\d, predicts \[1, 2, 3\]$",
             r"^target of shape \(3, 1\): RuntimeError: .*multi-target not supported$",
             r"^logits \[10, 0, 0\], target 2: nll_loss\(softmax\) -0\.00005, gradient norm "
             r"6\.4e-05$",
             r"^logits \[10, 0, 0\], target 2: cross_entropy 10\.00009, gradient norm 1\.4$",
             r"^state carried without detach\(\): RuntimeError: Trying to backward through the "
             r"graph a second time$",
             r"^step    75 \| loss \d\.\d{4}$", r"^step   300 \| loss 0\.\d{4}$",
             r"^trained on (cpu|cuda|mps): 608,640 tokens \(characters\), [\d,]+ tokens/s$",
             r"^after held-out text:$", r"^\d{4} \d{4} \d{4} \d{4}$",
             r"^held-out lines it counts on from their first number: ([5-9]\d|100) of 100$",
             r"^held out: the last 16,000 characters, never trained on; the best expected loss: "
             r"about 0\.455$",
             r"^loss=0\.4\d{3} baseline=2\.38\d\d accuracy=8\d\.\d%$"]  # loss < 0.5 x baseline
BAD_RUN = (["--batch-size", "0"], "argument --batch-size: must be in 1..1024, got 0")
FLAG_RUN = (["--steps", "40"], r"^trained on \w+: 81,920 tokens \(characters\), ")  # 40 x 32 x 64
LAST = re.compile(r"^loss=([\d.]+) baseline=([\d.]+) accuracy=([\d.]+)%$")


def test_the_models_log_probabilities_and_state_read_one_step_at_a_time():
    torch.manual_seed(0)
    model, tokens = m.CharLSTM(vocab_size=5, hidden_size=8), torch.randint(0, 5, (7, 3))
    log_probs, (h, c) = model(tokens)
    assert log_probs.shape == (7, 3, 5) and h.shape == c.shape == (1, 3, 8)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(7, 3))
    state = None
    for t in range(7):  # one step at a time, the state carried: the same as reading it whole
        step, state = model(tokens[t : t + 1], state)
        torch.testing.assert_close(step[0], log_probs[t])


def test_nll_loss_of_log_softmax_is_cross_entropy_and_of_softmax_minus_the_mean_probability():
    logits, target = torch.randn(3, 4), torch.tensor([1, 2, 3])
    torch.testing.assert_close(F.nll_loss(F.log_softmax(logits, -1), target),
                               F.cross_entropy(logits, target))
    probs = F.softmax(logits, -1)[torch.arange(3), target]
    torch.testing.assert_close(F.nll_loss(F.softmax(logits, -1), target), -probs.mean())


def test_the_gradient_numbers_the_lesson_prints_by_hand():
    p = torch.softmax(torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64), -1)
    onehot = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert (p[2] * (p - onehot)).norm().item() == pytest.approx(6.4e-5, rel=0.01)  # of -p2
    assert (p - onehot).norm().item() == pytest.approx(2**0.5, rel=1e-3)  # cross_entropy's
    assert -math.log(p[2].item()) == pytest.approx(10.00009, abs=1e-5)


def test_counting_text_counts_from_a_seeded_four_digit_start():
    text = m.counting_text(500, seed=3)
    lines = text.splitlines()
    assert len(text) == 500 * 20 and len(lines) == 500 and text == m.counting_text(500, seed=3)
    for line in lines:
        numbers = [int(n) for n in line.split(" ")]
        assert numbers == list(range(numbers[0], numbers[0] + 4))
        assert 1000 <= numbers[0] <= 9995 and len(line) == 19
    assert text != m.counting_text(500, seed=4)


def test_the_best_loss_possible_the_lesson_states_is_the_first_numbers_uncertainty():
    """Every start equally likely, 20 characters a line, all but the first number determined."""
    starts = [int(line[:4]) for line in m.counting_text(100_000, seed=0).splitlines()]
    assert (min(starts), max(starts)) == (1000, 9995)  # 8996 starts
    stated = re.search(r"ln\(8996\)/20 = ([\d.]+) nats", Path(m.__file__).read_text())[1]
    assert stated == f"{math.log(8996) / 20:.3f}"  # 0.4552; scored from the second held-out
    # character on, the best is (800 ln 8996 - ln 9) / 15999 = 0.4551 (the first digit: 1 of 9)


@pytest.mark.parametrize("raw, text", [
    (b"\xef\xbb\xbfone\r\ntwo\r\n", "one\ntwo\n"),  # Windows, from a BOM-writing editor
    (b"one\rtwo\r", "one\ntwo\n"),  # old Mac
    (b"caf\xc3\xa9\n", "caf\u00e9\n"),
])
def test_read_text_drops_a_bom_and_reads_line_ends_as_newlines(raw, text, tmp_path):
    (tmp_path / "t.txt").write_bytes(raw)
    assert m.read_text(tmp_path / "t.txt") == text


def test_read_text_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        m.read_text(tmp_path / "latin1.txt")
    (tmp_path / "big.txt").write_bytes(b"x" * 101)
    with pytest.raises(ValueError, match="over 100 bytes"):
        m.read_text(tmp_path / "big.txt", max_bytes=100)


def test_bigram_loss_by_hand():
    # training pairs 0->0 and 0->1, plus one of each: from 0 the counts [2, 2, 1], from 1 [1, 1, 1]
    loss = m.bigram_loss(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), vocab_size=3)
    assert loss == pytest.approx(-(math.log(2 / 5) + math.log(1 / 3)) / 2)  # 0->1, then 1->2


def pieces(text: str, batch_size: int):
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(ch) for ch in text])
    n = len(data) // batch_size
    return vocab, data[: n * batch_size].view(batch_size, n).T.contiguous()


def test_train_lowers_the_loss_keeps_the_callers_optimizer_and_sets_train_mode(capsys):
    torch.manual_seed(0)
    vocab, data = pieces("abcd" * 300, batch_size=4)  # (300, 4)
    model = m.CharLSTM(len(vocab), 16, dropout=0.3).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    tokens = 4 * (18 * 16 + 11 + 11 * 16)  # a pass over 300 rows: 18 windows of 16, one of 11
    assert m.train(model, optimizer, data, steps=30, seq_len=16, log_every=10) == tokens
    assert model.training
    assert m.train(model, optimizer, data, steps=30, seq_len=16, log_every=10) == tokens
    assert optimizer.state[next(model.parameters())]["step"] == 60  # Adam's state went on
    losses = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.1 < losses[0]  # "abcd" repeats: learnable


def test_train_reads_each_window_after_the_last_and_starts_over_from_zero(monkeypatch):
    torch.manual_seed(0)
    vocab, data = pieces("abcdefghij" * 5, batch_size=2)  # (25, 2): windows 0-9, 10-19, 20-23
    model = m.CharLSTM(len(vocab), 4)
    calls, forward = [], model.forward
    model.forward = lambda x, state=None: (calls.append((x[0, 0].item(), len(x), state is None)),
                                           forward(x, state))[1]
    m.train(model, torch.optim.SGD(model.parameters(), lr=0.1), data, 5, seq_len=10)
    firsts = [data[i, 0].item() for i in (0, 10, 20, 0, 10)]
    assert calls == [(firsts[0], 10, True), (firsts[1], 10, False), (firsts[2], 4, False),
                     (firsts[3], 10, True), (firsts[4], 10, False)]


def test_ctrl_c_in_train_returns_the_steps_done(capsys):
    torch.manual_seed(0)
    vocab, data = pieces("abcd" * 50, batch_size=2)
    model = m.CharLSTM(len(vocab), 8)
    forward, calls = model.forward, []

    def interrupted_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return forward(*args)
    model.forward = interrupted_at_step_4
    tokens = m.train(model, torch.optim.Adam(model.parameters()), data, 10, 8, log_every=100)
    assert tokens == 3 * 8 * 2
    assert capsys.readouterr().out == ("Ctrl-C: training stopped after 3 steps; going on with "
                                       "the model as it is\n")


def test_the_highest_learning_rate_stays_finite(capsys):
    torch.manual_seed(0)
    vocab, data = pieces(m.counting_text(100, 0), batch_size=8)
    model = m.CharLSTM(len(vocab), 64)
    m.train(model, torch.optim.Adam(model.parameters(), lr=1.0), data, 100, 32, log_every=1000)
    assert all(p.isfinite().all() for p in model.parameters())  # clipping bounds each step


def test_evaluation_in_chunks_is_one_pass_and_scores_the_characters_the_baseline_scores():
    torch.manual_seed(0)
    model, data = m.CharLSTM(7, 8, dropout=0.5), torch.randint(0, 7, (1001,))
    loss, accuracy = m.evaluate(model, data, chunk=64)  # eval(): dropout off
    with torch.no_grad():
        log_probs = model(data[:-1].view(-1, 1))[0][:, 0]  # (1000, V), one pass
    target = data[1:]  # every character after the first: the pairs bigram_loss scores
    torch.testing.assert_close(loss, F.nll_loss(log_probs, target).item())
    assert accuracy == pytest.approx((log_probs.argmax(-1) == target).float().mean().item())
    assert not model.training


def test_evaluate_reads_a_long_text_in_bounded_chunks():
    torch.manual_seed(0)
    model, shapes = m.CharLSTM(5, 4), []
    forward = model.forward
    model.forward = lambda x, state=None: (shapes.append(tuple(x.shape)), forward(x, state))[1]
    m.evaluate(model, torch.randint(0, 5, (20_001,)))
    assert max(t for t, _ in shapes) == 256 and {b for _, b in shapes} == {1}


@pytest.mark.parametrize("temperature", [None, 0.01, 1.0, 100.0])
def test_generation_writes_the_requested_length_from_the_vocabulary(temperature):
    torch.manual_seed(0)
    model, vocab = m.CharLSTM(6, 8), list("abcdef")
    written = m.generate(model, "ab", 25, vocab, temperature)
    assert len(written) == 25 and set(written) <= set(vocab)


def test_sampling_follows_torchs_seed_and_greedy_needs_none():
    torch.manual_seed(0)
    model, vocab = m.CharLSTM(6, 8), list("abcdef")
    torch.manual_seed(1)
    a = m.generate(model, "ab", 30, vocab, 2.0)
    torch.manual_seed(1)
    assert a == m.generate(model, "ab", 30, vocab, 2.0) != m.generate(model, "ab", 30, vocab, 2.0)
    assert m.generate(model, "ab", 30, vocab) == m.generate(model, "ab", 30, vocab)


def english_prose() -> str:
    """About 7 KB of the Python language reference, as the standard library ships it."""
    from pydoc_data.topics import topics
    return "\n".join(topics[k] for k in ["truth", "booleans", "if", "while", "for", "break",
                                          "continue", "pass"])


def test_a_few_kb_of_prose_beats_the_bigram_baseline_on_what_was_held_out(tmp_path, capsys,
                                                                            monkeypatch):
    """`--text-file` with the other flags as they are: dropout keeps 7 KB from being learned by
    heart in 300 steps (without it, by 600 steps the held-out loss is above the baseline's)."""
    (tmp_path / "prose.txt").write_text(english_prose(), encoding="utf-8")
    run_in_process("05_lstm.py", ["--text-file", "prose.txt"], monkeypatch, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"^held out: the last \d{3} characters, never trained on$", lines[-2])
    loss, baseline, _ = map(float, LAST.match(lines[-1]).groups())
    assert loss < baseline - 0.5, lines[-1]


def test_the_lesson_goes_on_after_a_ctrl_c_in_training(tmp_path, monkeypatch, capsys):
    ctrl_c_at_step(monkeypatch, torch.optim.Adam, 300 + 20)  # the three tokens' 300, then 19
    run_in_process("05_lstm.py", ["--steps", "100"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "\nCtrl-C: training stopped after 19 steps; going on with the model as it is\n" in out
    assert "trained on cpu: 38,912 tokens (characters), " in out  # 19 x 32 x 64
    assert LAST.match(out.splitlines()[-1])


@pytest.mark.parametrize("content, message", [
    (None, "[Errno 2] No such file or directory: 'text.txt'"),
    (b"caf\xe9 au lait\n" * 20, "'utf-8' codec can't decode byte 0xe9 in position 3: "
                                "invalid continuation byte"),
    (b"too short\n", "10 characters: too few to hold a tenth out, 17 a piece"),
])
def test_a_text_file_it_cannot_use_is_one_error_line(content, message, tmp_path, monkeypatch,
                                                     capsys):
    if content is not None:
        (tmp_path / "text.txt").write_bytes(content)
    line = error_line("05_lstm.py", ["--text-file", "text.txt"], monkeypatch, capsys, tmp_path)
    assert line == f"--text-file text.txt: {message}"


@pytest.mark.parametrize("argv, message", [
    (["--seq-len", "0"], "argument --seq-len: must be in 1..1024, got 0"),
    (["--hidden-size", "5000"], "argument --hidden-size: must be in 1..4096, got 5000"),
    (["--lr", "nan"], "argument --lr: must be in 1e-06..1.0, got nan"),
    (["--temperature", "0"], "argument --temperature: must be in 0.01..100, got 0"),
    (["--temperature", "x"], "argument --temperature: invalid number value: 'x'"),
])
def test_a_size_or_rate_that_cannot_run_is_one_error_line(argv, message, monkeypatch, capsys):
    assert error_line("05_lstm.py", argv, monkeypatch, capsys) == message

