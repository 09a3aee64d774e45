"""05_lstm.py: the model on three tokens and two mistakes, the counting text held out against a
bigram baseline, training that carries the state, generation, evaluation, and a text file."""
import math
import re
import runpy

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, load_script

KEY_LINES = [r"^input \[3, 1, 2\], targets \[1, 2, 3\] \(the next tokens\): loss 0\.00\d\d after "
             r"300 steps, predicts \[1, 2, 3\]$",
             r"^mistake 1, targets of shape \(3, 1\): RuntimeError: .*multi-target not supported$",
             r"^mistake 2, sure and wrong \(logits \[10\.0, 0\.0, 0\.0\], target 2\): gradient "
             r"norm 6\.42e-05 from nll_loss\(softmax\), 1\.41 from cross_entropy$",
             r"^mistake 2, unsure and wrong \(logits \[0\.5, 0\.0, 0\.0\], target 2\): gradient "
             r"norm 0\.246 from nll_loss\(softmax\), 0\.898 from cross_entropy$",
             r"^text: 160,000 characters, 12 distinct; bigram baseline 2\.38\d\d$",
             r"^step    75 \| mean training loss \d\.\d{4}$",
             r"^step   300 \| mean training loss 0\.\d{4}$",
             r"^trained on (cpu|cuda|mps|xpu): 306,368 tokens in [\d.]+ s, [\d,]+ tokens/s$",
             r"^the first 40 held-out characters given, 100 written at temperature 0\.8:$",
             r"^  given   \| \d{4} \d{4} \d{4} \d{4}$", r"^  written \| \d{4} \d{4} \d{4} \d{4}$",
             r"^held-out lines continued exactly, greedy, from their first number: ([3-9]\d|100) "
             r"of 100$",
             r"^held out: the last 16,000 characters, never trained on$",
             r"^held out \| loss 0\.[45]\d{3} \| bigram baseline 2\.38\d\d \| accuracy 8[01]\.\d% "
             r"\| the best possible: loss 0\.455, accuracy 82%$"]  # loss < 0.5 x the baseline
LAST = re.compile(r"^held out \| loss ([\d.]+) \| bigram baseline ([\d.]+) \| accuracy ([\d.]+)%")


@pytest.fixture(scope="module")
def m():
    """The lesson, run once per test process with a short training: its functions and results."""
    return load_script("05_lstm.py", "--steps", "20")


def run_lesson(tmp_path, monkeypatch, *argv):
    """`python 05_lstm.py ARGV` in this process, where torch is imported already."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["05_lstm.py", *argv])
    return runpy.run_path(str(ROOT / "05_lstm.py"), run_name="__main__")


def test_the_models_log_probabilities_and_state_read_one_step_at_a_time(m):
    torch.manual_seed(0)
    model, tokens = m.CharLSTM(vocab_size=5, hidden_size=8), torch.randint(0, 5, (7, 3))
    log_probs, (h, c) = model(tokens)
    assert log_probs.shape == (7, 3, 5) and h.shape == c.shape == (1, 3, 8)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(7, 3))
    state = None
    for t in range(7):  # one step at a time, the state carried: the same as reading it whole
        step, state = model(tokens[t : t + 1], state)
        torch.testing.assert_close(step[0], log_probs[t])


def test_the_three_tokens_are_learned(m):
    """The small model predicts 1, 2, 3 after 3, 1, 2: each target is the next token."""
    with torch.no_grad():
        log_probs, _ = m.tiny(torch.tensor([[3], [1], [2]]))
    assert log_probs[:, 0].argmax(-1).tolist() == [1, 2, 3]
    assert m.tiny.lstm.input_size == 4 and m.tiny.lstm.hidden_size == 2


def test_nll_loss_of_log_softmax_is_cross_entropy_and_of_softmax_minus_the_mean_probability():
    logits, target = torch.randn(3, 4), torch.tensor([1, 2, 3])
    torch.testing.assert_close(F.nll_loss(F.log_softmax(logits, -1), target),
                               F.cross_entropy(logits, target))
    probs = F.softmax(logits, -1)[torch.arange(3), target]
    torch.testing.assert_close(F.nll_loss(F.softmax(logits, -1), target), -probs.mean())


@pytest.mark.parametrize("logits, softmax_norm, cross_entropy_norm",
                         [([10.0, 0.0, 0.0], "6.42e-05", "1.41"),
                          ([0.5, 0.0, 0.0], "0.246", "0.898")])
def test_the_gradient_norms_the_lesson_prints_by_hand(logits, softmax_norm, cross_entropy_norm):
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1)
    onehot = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # d(-p2)/dz = p2 (p - onehot); d(-log p2)/dz = p - onehot
    assert f"{(p[2] * (p - onehot)).norm().item():.3g}" == softmax_norm
    assert f"{(p - onehot).norm().item():.3g}" == cross_entropy_norm


def test_a_state_carried_without_detach_makes_the_next_backward_fail(m):
    """The pitfall the lesson names where train() detaches the state."""
    model, x = m.CharLSTM(5, 4), torch.randint(0, 5, (3, 2))
    log_probs, state = model(x)
    log_probs.sum().backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        model(x, state)[0].sum().backward()


def test_the_counting_text_and_its_held_out_last_tenth(m):
    lines = m.text.splitlines()
    assert len(lines) == 8000 and len(m.text) == 8000 * 20
    for line in lines:
        numbers = [int(n) for n in line.split(" ")]
        assert numbers == list(range(numbers[0], numbers[0] + 4)) and 1000 <= numbers[0] <= 9995
    assert m.train_text + m.held_out_text == m.text and m.train_text.endswith("\n")
    assert len(m.held_out_text) == 16_000  # the last 800 lines
    assert m.held_out.tolist() == [m.vocab.index(ch) for ch in m.held_out_text]


def test_the_best_loss_and_accuracy_the_lesson_states():
    """Every start in 1000..9995 equally likely, 20 characters a line, the rest determined."""
    assert f"{math.log(8996) / 20:.3f}" == "0.455"
    first_digit = 1000 / 8996  # the likeliest first digit, 1-8 (9 has only 996 starts)
    assert f"{(16 + first_digit + 3 / 10) / 20:.0%}" == "82%"
    assert f"{(16 + 1 / 9 + 3 / 10) / 20:.0%}" == "82%"


def test_the_bigram_baseline_against_a_dense_table_of_counts(m):
    V, train = len(m.vocab), m.train_data
    counts = torch.ones(V, V, dtype=torch.float64)  # one each, plus the training pairs
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64),
                      accumulate=True)
    probs = counts / counts.sum(1, keepdim=True)
    x, y = m.held_out[:-1], m.held_out[1:]
    assert m.baseline == pytest.approx(-probs[x, y].log().mean().item(), rel=1e-9)
    assert 2.3 < m.baseline < 2.5  # about ln(10) = 2.30: a digit after a digit is a guess


def test_the_batch_rows_are_stretches_of_the_text_side_by_side(m):
    """Column b of data is the b-th stretch of the training text (the picture's a e / b f ...)."""
    n, B = m.data.shape
    assert (n, B) == (len(m.train_text) // 32, 32)
    for b in (0, 1, 31):
        column = "".join(m.vocab[i] for i in m.data[:, b].tolist())
        assert column == m.train_text[b * n : (b + 1) * n]


def pieces(text: str, batch_size: int):
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(ch) for ch in text])
    n = len(data) // batch_size
    return vocab, data[: n * batch_size].view(batch_size, n).T.contiguous()


def test_train_lowers_the_loss_keeps_the_callers_optimizer_and_sets_train_mode(m, capsys):
    torch.manual_seed(0)
    vocab, data = pieces("abcd" * 300, batch_size=4)  # (300, 4)
    model = m.CharLSTM(len(vocab), 16, dropout=0.3).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    capsys.readouterr()
    tokens = 4 * (18 * 16 + 11 + 11 * 16)  # a pass over 300 rows: 18 windows of 16, one of 11
    assert m.train(model, optimizer, data, steps=30, seq_len=16, log_every=10) == tokens
    assert model.training
    assert m.train(model, optimizer, data, steps=30, seq_len=16, log_every=10) == tokens
    assert optimizer.state[next(model.parameters())]["step"] == 60  # Adam's state went on
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines] == [f"step {s:5d}" for s in (10, 20, 30) * 2]
    losses = [float(line.split()[-1]) for line in lines]
    assert losses[-1] < 0.1 < losses[0]  # "abcd" repeats: learnable


def test_the_logged_loss_is_the_mean_over_the_window(m, capsys, monkeypatch):
    torch.manual_seed(0)
    vocab, data = pieces("abcdefgh" * 40, batch_size=2)
    model, losses, nll = m.CharLSTM(len(vocab), 8), [], F.nll_loss

    def recorded(*args, **kwargs):  # each step's loss, as train() computes it
        loss = nll(*args, **kwargs)
        losses.append(loss.item())
        return loss
    monkeypatch.setattr(m.F, "nll_loss", recorded)
    capsys.readouterr()
    m.train(model, torch.optim.SGD(model.parameters(), lr=0.1), data, 6, seq_len=8, log_every=3)
    printed = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()]
    means = [sum(losses[i : i + 3]) / 3 for i in (0, 3)]
    assert printed == pytest.approx(means, abs=1e-4)


def test_train_reads_each_window_after_the_last_and_starts_over_from_zero(m):
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


def test_the_carried_state_is_detached_so_each_backward_stays_in_its_window(m):
    """Two steps with the state carried: the second backward() would fail on a freed graph."""
    torch.manual_seed(0)
    vocab, data = pieces("abcdefghij" * 5, batch_size=2)
    model = m.CharLSTM(len(vocab), 4)
    m.train(model, torch.optim.SGD(model.parameters(), lr=0.1), data, 2, seq_len=10, log_every=2)


def test_evaluation_scores_the_held_out_characters_the_baseline_scores_with_dropout_off(m):
    """The printed loss and accuracy: every held-out character after the first, predicted from
    those before it with the state carried, dropout off (read here one chunk at a time)."""
    model, data = m.model, m.held_out
    was_training = model.training
    model.eval()
    state, total, correct = None, 0.0, 0
    with torch.no_grad():
        for x, y in zip(data[:-1].split(1000), data[1:].split(1000)):
            log_probs, state = model(x.view(-1, 1), state)
            total += F.nll_loss(log_probs[:, 0], y, reduction="sum").item()
            correct += (log_probs[:, 0].argmax(-1) == y).sum().item()
    model.train(was_training)
    assert m.loss == pytest.approx(total / (len(data) - 1), rel=1e-5)
    assert m.accuracy == pytest.approx(correct / (len(data) - 1))


def test_generation_carries_the_state_as_rereading_the_whole_text_would(m):
    """At a temperature near 0 sampling takes the likeliest character; each step from the
    carried state matches the model run again over the prompt and all it wrote so far."""
    torch.manual_seed(0)
    model = m.CharLSTM(len(m.vocab), 8, dropout=0.5)
    written = m.generate(model, "1234 1235", 12, 1e-4)
    assert not model.training  # dropout off
    text = "1234 1235"
    with torch.no_grad():
        for _ in range(12):
            tokens = torch.tensor([m.vocab.index(ch) for ch in text]).view(-1, 1)
            text += m.vocab[model(tokens)[0][-1, 0].argmax().item()]
    assert written == text[9:]


def test_sampling_follows_torchs_seed_and_its_temperature(m):
    torch.manual_seed(0)
    model = m.CharLSTM(len(m.vocab), 8)
    torch.manual_seed(1)
    a = m.generate(model, "12", 40, 2.0)
    torch.manual_seed(1)
    assert m.generate(model, "12", 40, 2.0) == a != m.generate(model, "12", 40, 2.0)
    with torch.no_grad():
        probs = F.softmax(model(torch.tensor([[1], [2]]))[0][-1, 0] / 2.0, -1)
    firsts = [m.generate(model, "12", 1, 2.0) for _ in range(2000)]
    counts = torch.tensor([firsts.count(ch) for ch in m.vocab], dtype=torch.float64)
    torch.testing.assert_close(counts / 2000, probs.double(), atol=0.04, rtol=0)


def english_prose() -> str:
    """About 7 KB of the Python language reference, as the standard library ships it."""
    from pydoc_data.topics import topics
    return "\n".join(topics[k] for k in ["truth", "booleans", "if", "while", "for", "break",
                                          "continue", "pass"])


def test_a_few_kb_of_prose_with_a_bom_and_crlf_beats_the_bigram_baseline(tmp_path, monkeypatch,
                                                                       capsys):
    """`--text-file` at `--steps 600` (`--seq-len 16`: a quarter of the time), the file
    written with a BOM and CRLF line ends: it reads as the same text, and dropout keeps 7 KB
    from being learned by heart."""
    text = english_prose()
    (tmp_path / "prose.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    lesson = run_lesson(tmp_path, monkeypatch, "--text-file", "prose.txt", "--steps", "600",
                        "--seq-len", "16")
    assert lesson["text"] == text
    lines = capsys.readouterr().out.splitlines()
    held_out = len(text) - len(text) * 9 // 10
    assert lines[-2] == f"held out: the last {held_out:,} characters, never trained on"
    loss, baseline, _ = map(float, LAST.match(lines[-1]).groups())
    assert loss < baseline - 0.2, lines[-1]
    assert not lines[-1].endswith("82%")  # the best possible is known only for the counting text
    assert "held-out lines continued" not in "\n".join(lines)


@pytest.mark.parametrize("raw", [b"one\r\ntwo\r\n" * 5, b"one\rtwo\r" * 5,
                                 b"\xef\xbb\xbf" + b"one\ntwo\n" * 5])
def test_crlf_cr_and_a_bom_read_as_the_same_text(raw, tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_bytes(raw)
    lesson = run_lesson(tmp_path, monkeypatch, "--text-file", "t.txt", "--batch-size", "1",
                        "--steps", "2", "--hidden-size", "4")
    assert lesson["text"] == "one\ntwo\n" * 5


def test_a_file_that_is_not_utf8_raises_the_decoders_error(tmp_path, monkeypatch):
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1") * 20)
    with pytest.raises(UnicodeDecodeError, match="can't decode byte 0xe9 in position 3"):
        run_lesson(tmp_path, monkeypatch, "--text-file", "latin1.txt")


def test_a_text_too_short_for_the_batch_rows_is_refused_naming_the_limit(tmp_path, monkeypatch,
                                                                         capsys):
    (tmp_path / "line.txt").write_text("a thirty-character line, here\n")  # 30 characters
    with pytest.raises(ValueError, match="^30 characters: too short to hold out 2 and train each "
                                         r"of the 32 batch rows on 2 \(try a smaller "
                                         r"--batch-size\)$"):
        run_lesson(tmp_path, monkeypatch, "--text-file", "line.txt")  # 27 to train, 32 rows
    lesson = run_lesson(tmp_path, monkeypatch, "--text-file", "line.txt", "--batch-size", "1",
                        "--steps", "5")
    assert len(lesson["train_text"]) == 27 and len(lesson["held_out_text"]) == 3
    assert LAST.match(capsys.readouterr().out.splitlines()[-1])
    (tmp_path / "tiny.txt").write_text("123456789\n")  # 1 character would be held out
    with pytest.raises(ValueError, match="^10 characters: too short to hold out 2"):
        run_lesson(tmp_path, monkeypatch, "--text-file", "tiny.txt", "--batch-size", "1")


def test_a_vocabulary_too_large_for_one_hot_inputs_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cjk.txt").write_text("".join(chr(0x4E00 + i) for i in range(1001)) * 3,
                                      encoding="utf-8")
    with pytest.raises(ValueError, match="^1,001 distinct characters: over 1,000; use "
                                         "nn.Embedding$"):
        run_lesson(tmp_path, monkeypatch, "--text-file", "cjk.txt")
