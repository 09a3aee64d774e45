"""05_lstm.py: the three-token example and its mistakes, the character LSTM, held-out evaluation,
carried state and detach(), clipping, generation, Ctrl-C and bad input."""
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import early, interrupt, load_script, parse_error, run_in_process, scratch, submit

m = load_script("05_lstm.py")
TOKENS, TARGET = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])

KEY_LINES = [r"^device: (cpu|cuda|mps)$",
             r"^tiny LSTM: \[3, 1, 2\] -> \[1, 2, 3\] after \d+ Adam steps$",
             r"^nll_loss\(log_softmax\(logits\)\) (\d\.\d{4}) == cross_entropy\(logits\) \1$",
             r"^one_hot @ W_ih.T == rows of W_ih.T \(an embedding lookup\): True$",
             r"^target of shape \(3, 1\): RuntimeError: .*multi-target not supported$",
             r"^nll_loss\(softmax\(logits\)\) (-0\.\d{4}) == minus the mean target probabil.* \1$",
             r"^logits \[10, 0, 0\], target 2: gradient norm 6.4e-05 by nll_loss\(softmax\), "
             r"1.41 by cross_entropy$",
             r"^text: 113 characters, vocabulary 28$",
             r"^tokens \(8, 1\) -> log-probabilities \(8, 1, 28\), h_n and c_n \(1, 1, 64\)$",
             r"^out\[-1\] == h_n\[-1\]: True \| one at a time == whole: True$",
             r"^nothing held out: 113 characters \(< 2,000\) are learned by heart",
             r"^training on random windows: \(seq_len, batch\) = \(64, 32\)$",
             r"^step   120 \| loss 0\.0\d+$", r"^speed: [\d,]+ tokens/s",
             r"^state carried without detach\(\): RuntimeError: Trying to backward through the "
             r"graph a second time$",
             r"^with detach\(\): 3 steps run, losses \d\.\d\d, \d\.\d\d, \d\.\d\d$",
             r"^training text: loss 0\.0\d+ \(unigram baseline 2\.9976\), accuracy 100\.0%$",
             r"^generated from 'T':$", *(f"^{line}$" for line in m.TEXT.splitlines()),
             r"^in short, on the training text:$", r"^loss=0\.0\d+ accuracy=100\.0%$"]
BAD_RUN = (["--lr", "inf"], "argument --lr: must be in 1e-05..1, got inf")
FLAG_RUN = (["--hidden-size", "32", "--steps", "5"], r"h_n and c_n \(1, 1, 32\)$")


@pytest.fixture(scope="module")
def tiny_logits():
    lstm, linear, steps = m.train_tiny(seed=0)
    assert steps < 500
    with torch.no_grad():
        return m.tiny_logits(lstm, linear, TOKENS)


def test_tiny_lstm_learns_1_2_3_and_its_nll_of_log_softmax_equals_cross_entropy(tiny_logits):
    assert tiny_logits.shape == (3, 4) and tiny_logits.argmax(-1).tolist() == [1, 2, 3]
    loss = F.nll_loss(F.log_softmax(tiny_logits, dim=-1), TARGET)
    by_hand = -torch.log_softmax(tiny_logits, -1)[torch.arange(3), TARGET].mean()
    torch.testing.assert_close(loss, F.cross_entropy(tiny_logits, TARGET))
    torch.testing.assert_close(loss, by_hand)


def test_nll_of_softmax_is_minus_the_mean_target_probability(tiny_logits):
    probs = torch.softmax(tiny_logits, -1)[torch.arange(3), TARGET]
    wrong = m.nll_of_softmax(tiny_logits, TARGET)
    torch.testing.assert_close(wrong, -probs.mean())
    assert -1 <= wrong <= 0  # never positive: it looks like a fine loss


def test_nll_of_softmax_gradient_vanishes_when_confidently_wrong():
    logits, target = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([2])
    p = torch.softmax(logits[0].double(), -1)  # gradient of -p2: p2 * (p - onehot(2))
    by_hand = (p[2] * (p - torch.tensor([0.0, 0.0, 1.0]).double())).norm().item()
    assert m.input_grad_norm(m.nll_of_softmax, logits, target) == pytest.approx(by_hand, rel=1e-3)
    assert by_hand == pytest.approx(6.4e-5, rel=0.01)
    ce = m.input_grad_norm(F.cross_entropy, logits, target)  # p - onehot(2)
    assert ce == pytest.approx((p - torch.tensor([0, 0, 1.0]).double()).norm().item(), rel=1e-4)
    assert ce == pytest.approx(2**0.5, rel=1e-3)


def test_a_target_of_shape_3_by_1_is_refused(tiny_logits):
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        F.nll_loss(F.log_softmax(tiny_logits, dim=-1), TARGET.view(3, 1))


def test_char_lstm_gives_log_probabilities_and_its_last_output_is_the_final_state():
    torch.manual_seed(0)
    model, tokens = m.CharLSTM(vocab_size=5, hidden_size=8), torch.randint(0, 5, (7, 3))
    log_probs, (h, c) = model(tokens)
    assert log_probs.shape == (7, 3, 5) and h.shape == c.shape == (1, 3, 8)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(7, 3))
    out, (h_n, _) = model.lstm(F.one_hot(tokens, 5).float())
    assert torch.equal(out[-1], h_n[-1])
    state = None
    for t in range(7):  # one step at a time, the state carried: the same as reading it whole
        step, state = model(tokens[t : t + 1], state)
        torch.testing.assert_close(step[0], log_probs[t])


def test_encode_decode_round_trip():
    vocab = sorted(set("hello"))
    assert m.encode("hello", vocab).tolist() == [1, 0, 2, 2, 3]
    assert m.decode(m.encode("hello", vocab).tolist(), vocab) == "hello"


def test_the_validation_split_holds_out_exactly_the_tail():
    data = torch.arange(2345)
    train, val = m.split_tail(data)
    assert len(val) == 234 and torch.equal(torch.cat([train, val]), data)
    assert torch.equal(val, torch.arange(2111, 2345))
    assert torch.equal(m.split_tail(torch.arange(2000))[1], torch.arange(1800, 2000))
    short, none = m.split_tail(torch.arange(1999))
    assert none is None and len(short) == 1999


def test_random_windows_are_windows_and_their_next_characters():
    data = torch.arange(50)
    x, y = m.random_windows(data, seq_len=6, batch_size=4,
                            generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 4) and torch.equal(y, x + 1) and int(y.max()) <= 49
    assert torch.equal(x[1:], y[:-1])  # each column is a run of the text
    x2, _ = m.random_windows(data, 6, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_consecutive_windows_continue_each_other_column_by_column():
    windows = list(m.consecutive_windows(torch.arange(41), seq_len=6, batch_size=2))
    assert [len(x) for x, _ in windows] == [6, 6, 6, 2]  # 20 characters per column
    x = torch.cat([x for x, _ in windows])  # (20, 2)
    y = torch.cat([y for _, y in windows])
    assert torch.equal(x.T, torch.arange(40).view(2, 20)) and torch.equal(y, x + 1)


def rhyme_model(hidden=16):
    torch.manual_seed(0)
    vocab = sorted(set(m.TEXT))
    return m.CharLSTM(len(vocab), hidden), m.encode(m.TEXT, vocab)


def test_carried_state_fails_without_detach_and_trains_with_it():
    model, data = rhyme_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        m.train_carried(model, optimizer, data, seq_len=8, batch_size=2, steps=3, detach=False)
    losses = m.train_carried(model, optimizer, data, seq_len=8, batch_size=2, steps=6)
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)


def test_clipping_bounds_the_gradient_norm():
    model, data = rhyme_model()
    x, y = m.random_windows(data, 16, 4, torch.Generator().manual_seed(0))
    F.nll_loss(model(x)[0].flatten(0, 1), y.flatten()).backward()
    unclipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert unclipped > 0.2  # so the bound below is a real cut
    m.train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, max_norm=0.1)
    clipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert clipped == pytest.approx(0.1, rel=1e-4)


def test_the_highest_learning_rate_stays_finite(capsys):
    model, data = rhyme_model(hidden=64)
    m.train(model, data, 100, 8, 32, lr=1.0, generator=torch.Generator().manual_seed(0),
            log_every=1000)
    loss, accuracy = m.evaluate(model, data)
    assert math.isfinite(loss) and all(p.isfinite().all() for p in model.parameters())


def test_ctrl_c_in_train_returns_the_steps_done(capsys):
    model, data = rhyme_model()
    forward, calls = model.forward, []

    def interrupted_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return forward(*args)
    model.forward = interrupted_at_step_4
    done = m.train(model, data, 10, 2, 8, 0.01, torch.Generator().manual_seed(0), log_every=100)
    assert done == 3
    assert capsys.readouterr().out == ("Ctrl-C: training stopped after 3 steps; going on with "
                                       "the model as it is\n")


def test_evaluation_reads_a_long_text_in_bounded_chunks_and_matches_one_pass():
    torch.manual_seed(0)
    model, data = m.CharLSTM(7, 8), torch.randint(0, 7, (200_001,))
    shapes, forward = [], model.forward
    model.forward = lambda x, state=None: (shapes.append(tuple(x.shape)), forward(x, state))[1]
    m.evaluate(model, data)
    assert max(t for t, _ in shapes) == 256 and max(b for _, b in shapes) == 64
    short = data[:3001]  # three pieces; one pass over each piece gives the same numbers
    loss, accuracy = m.evaluate(model, short, streams=3, chunk=50)
    with torch.no_grad():
        log_probs = model(short[:3000].view(3, 1000).T)[0]  # (1000, 3, V)
        target = short[1:].view(3, 1000).T
        torch.testing.assert_close(loss, F.nll_loss(log_probs.flatten(0, 1), target.flatten())
                                   .item())
        assert accuracy == pytest.approx((log_probs.argmax(-1) == target).float().mean().item())


def test_unigram_baseline_by_hand():
    # counts of [0, 0, 1] over 3 characters, plus one each: 3, 2, 1 out of 6
    loss = m.unigram_loss(torch.tensor([0, 0, 1]), torch.tensor([1, 0, 2]), vocab_size=3)
    assert loss == pytest.approx(-(math.log(3 / 6) + math.log(1 / 6)) / 2)


@pytest.mark.parametrize("temperature", [None, 0.01, 1.0, 10.0])
def test_generation_returns_the_requested_length_over_the_vocabulary(temperature):
    torch.manual_seed(0)
    model, vocab = m.CharLSTM(6, 8), sorted(set("abcdef"))
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


def lesson_lines(argv, capsys, monkeypatch) -> list[str]:
    """The script as `python 05_lstm.py ARGV`, in this process (torch is imported already)."""
    run_in_process("05_lstm.py", argv, monkeypatch)
    return [line for line in capsys.readouterr().out.splitlines() if "tokens/s" not in line]


def test_same_seed_prints_the_same_another_seed_does_not(capsys, monkeypatch):
    argv = ["--steps", "10", "--temperature", "1.0", "--sample-len", "40", "--seed"]
    first = lesson_lines([*argv, "3"], capsys, monkeypatch)
    assert lesson_lines([*argv, "3"], capsys, monkeypatch) == first
    assert lesson_lines([*argv, "4"], capsys, monkeypatch) != first


def english_prose() -> str:
    """About 7 KB of the Python language reference, as the standard library ships it."""
    from pydoc_data.topics import topics
    return "\n".join(topics[k] for k in ["truth", "booleans", "if", "while", "for", "break",
                                          "continue", "pass"])


def test_english_prose_is_held_out_and_beats_the_unigram_baseline(tmp_path, capsys, monkeypatch):
    path = tmp_path / "prose.txt"
    path.write_text(english_prose(), encoding="utf-8")
    lines = lesson_lines(["--text-file", str(path), "--prompt", "The "], capsys, monkeypatch)
    assert any(line.startswith("held out: the last ") for line in lines)
    tail = next(line for line in lines if line.startswith("held-out tail: "))
    loss, baseline = map(float, re.match(r"held-out tail: loss (\S+) \(unigram baseline (\S+)\)",
                                         tail).groups())
    assert loss < baseline - 0.8, tail
    assert lines[-2] == "in short, on the held-out tail:" and lines[-1].startswith(f"loss={loss}")


def interrupt_training() -> tuple:
    cwd = scratch("05-ctrl-c")
    # the line printed just before training starts
    return (*interrupt("05_lstm.py", "--steps", "20000",
                       after={"training on random windows": 0.5}, cwd=cwd), cwd)


@early()
def interrupted():
    return submit(interrupt_training)


def test_ctrl_c_during_training_evaluates_and_generates_with_what_it_has(interrupted):
    code, out, err, cwd = interrupted.result()
    assert (code, err) == (0, "")
    assert "Ctrl-C: training stopped after " in out and "generated from 'T':" in out
    assert out.splitlines()[-1].startswith("loss=") and list(cwd.iterdir()) == []


def test_defaults_and_auto_device(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    args = m.parse_args([])
    assert (args.device, args.text, args.prompt, args.temperature) == (
        torch.device("cpu"), m.TEXT, "T", None)


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--steps", "0"], "argument --steps: must be in 1..20000, got 0"),
    (["--steps", "1e9"], "argument --steps: invalid integer value: '1e9'"),
    (["--hidden-size", "-1"], "argument --hidden-size: must be in 1..512, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be in 1..256, got 0"),
    (["--seq-len", "257"], "argument --seq-len: must be in 1..256, got 257"),
    (["--sample-len", "0"], "argument --sample-len: must be in 1..10000, got 0"),
    (["--lr", "0"], "argument --lr: must be in 1e-05..1, got 0"),
    (["--lr", "nan"], "argument --lr: must be in 1e-05..1, got nan"),
    (["--lr", "2"], "argument --lr: must be in 1e-05..1, got 2"),
    (["--temperature", "1e-45"], "argument --temperature: must be in 0.01..10, got 1e-45"),
    (["--temperature", "0"], "argument --temperature: must be in 0.01..10, got 0"),
    (["--temperature", "inf"], "argument --temperature: must be in 0.01..10, got inf"),
    (["--temperature", "x"], "argument --temperature: invalid number value: 'x'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--seq-len", "200"], "the text has 113 characters; --seq-len 200 needs at least 201"),
    (["--prompt", "Tw#nkle@"], "--prompt: characters not in the text: '#@'"),
    (["--prompt", ""], "--prompt: 1..1000 characters, got 0"),
    (["--prompt", "T" * 1001], "--prompt: 1..1000 characters, got 1001"),
]

def text_file_error(tmp_path, capsys, content: bytes | None, *argv: str) -> str:
    path = tmp_path / "text.txt"
    if content is not None:
        path.write_bytes(content)
    message = parse_error(m, ["--text-file", str(path), *argv], capsys)
    prefix = f"--text-file {path}: "
    assert message.startswith(prefix), message
    return message[len(prefix):]


@pytest.mark.parametrize("content, argv, message", [
    (None, [], "no such file"),
    (b"", [], "0 characters, fewer than 64"),
    (b"caf\xe9 latin-1" + b"x" * 80, [], "not UTF-8 (byte 0xe9 at offset 3)"),
    (b"short text", [], "10 characters, fewer than 64"),
])
def test_text_file_problems_are_one_line_naming_the_file(tmp_path, capsys, content, argv,
                                                         message):
    assert text_file_error(tmp_path, capsys, content, *argv) == message


def test_a_text_too_short_for_seq_len_is_refused(tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text("abc" * 30, encoding="utf-8")
    assert parse_error(m, ["--text-file", str(path), "--seq-len", "90"], capsys) == (
        "the text has 90 characters; --seq-len 90 needs at least 91")


def test_a_fifo_a_device_and_a_folder_are_refused_without_reading(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")  # opened for reading, it would wait for a writer forever
    for path in (tmp_path / "fifo", "/dev/zero", tmp_path):  # /dev/zero never ends
        message = parse_error(m, ["--text-file", str(path)], capsys)
        assert message == f"--text-file {path}: not a regular file"


def test_a_file_over_10_mb_is_refused(tmp_path, capsys):
    with open(tmp_path / "text.txt", "wb") as f:
        f.truncate(10_000_001)  # sparse: no disk used
    assert text_file_error(tmp_path, capsys, None) == "larger than 10,000,000 bytes"


def test_a_vocabulary_too_large_for_one_hot_points_at_embedding(tmp_path, capsys):
    """20,000 distinct characters would make one-hot rows of 20,000 floats per character."""
    text = "".join(chr(0x4E00 + i) for i in range(20_000))  # CJK ideographs
    message = text_file_error(tmp_path, capsys, text.encode("utf-8"))
    assert message == ("20,000 distinct characters, more than one-hot input serves (1,000): "
                       "use nn.Embedding for more")
