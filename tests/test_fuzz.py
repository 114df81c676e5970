"""Fuzzed inputs for the data reader and the translate command: every case ends in a result or one clear
MinilstmError line, never another exception (which the CLI would show as a traceback)."""

import gzip

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install '.[test]')")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minilstm import translate  # noqa: E402
from minilstm.checkpoint import save_checkpoint  # noqa: E402
from minilstm.cli import run_main  # noqa: E402
from minilstm.data import Dataset, Vocab, read_pairs  # noqa: E402
from minilstm.errors import MinilstmError  # noqa: E402
from minilstm.seq2seq import Seq2Seq  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

line = st.one_of(
    st.text(max_size=40),  # any unicode, control characters included
    st.builds(lambda a, b: f"{a}\t{b}", st.text(max_size=30), st.text(max_size=30)),
    st.builds(lambda a, b, c: f"{a}\t{b}\t{c}", st.text(max_size=20), st.text(max_size=20), st.text(max_size=20)),
    st.just(""),
    st.just("x" * 5000 + "\t" + "y" * 5000),  # very long lines
)
line_ending = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def file_bytes(draw):
    text = "".join(draw(line) + draw(line_ending) for _ in range(draw(st.integers(0, 8))))
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):  # splice in arbitrary bytes: invalid UTF-8, NUL, BOMs
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(max_size=12)) + data[pos:]
    return data


@SETTINGS
@given(data=file_bytes(), gz=st.booleans(), num_samples=st.one_of(st.none(), st.integers(1, 10)))
def test_reader_returns_pairs_or_a_clear_error(tmp_path, data, gz, num_samples):
    path = tmp_path / ("pairs.txt.gz" if gz else "pairs.txt")
    path.write_bytes(gzip.compress(data) if gz else data)
    try:
        pairs = read_pairs(path, num_samples)
    except MinilstmError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert pairs and all(isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip() for a, b in pairs)
    Dataset.from_pairs(pairs)  # whatever the reader accepts, the encoder must take


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = Seq2Seq("numpy", Vocab(list(" .!?GHIRabcdegilnoprstuw")), Vocab(list("\t\n !.CVaeinorstu")), 8, 12,
                    latent_dim=8)
    model.initialize(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", model)


@SETTINGS
@given(sentences=st.lists(st.text(max_size=60), min_size=1, max_size=4), skip=st.booleans())
@example(sentences=["G\n"], skip=False)  # a text's line break, kept in its translation, once made two lines
@example(sentences=["Go.\r\n\nHi!", "Go."], skip=True)
def test_translate_returns_lines_or_a_clear_error(checkpoint, capsys, sentences, skip):
    argv = [str(checkpoint), *(["--skip-unknown"] if skip else []), "--", *sentences]
    code = run_main(translate.main, argv)
    out, err = capsys.readouterr()
    if code == 0:
        assert out.count("\n") == len(sentences)  # one line per sentence (a translation never holds END)
        assert err == ""
    else:
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_translate_reads_invalid_utf8_stdin_as_an_error(checkpoint, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Go.\n\xff\xfe\n"), encoding="utf-8"))
    assert run_main(translate.main, [str(checkpoint)]) == 2
    assert capsys.readouterr().err.startswith("error: stdin is not valid UTF-8")
