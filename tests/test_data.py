"""Tests for minilstm.data: reading, vocabularies and ids (against the Keras example's one-hot loop), split,
batches, the built-in subset and the download (against a local HTTP server; no network)."""

from __future__ import annotations

import gzip
import http.server
import io
import re
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minilstm import data
from minilstm.data import (
    DEFAULT_DATA,
    END,
    PAD,
    START,
    Dataset,
    Vocab,
    download,
    encode_inputs,
    iterate_batches,
    read_pairs,
    resolve_pairs,
    split_validation,
    split_validation_random,
    validation_rows,
)
from minilstm.errors import MinilstmError

TINY = Path(__file__).resolve().parent / "data" / "tiny.txt"
SHARED_FRA = Path(__file__).resolve().parents[2] / "shared/data/fra-eng/fra.txt"


def shared_fra() -> Path:
    if not SHARED_FRA.is_file():
        pytest.skip(f"full data file not present at {SHARED_FRA}")
    return SHARED_FRA


# ------------------------------------------------------------------------ the Keras example, re-implemented


def keras_read(path: Path, num_samples: int) -> list[tuple[str, str]]:
    """The example's reading: split on "\\n", take lines[: min(num_samples, len(lines) - 1)], split on tabs.

    (The example unpacks exactly three columns; the first two are what it uses, so this takes those.)
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split("\t")[:2]) for line in lines[: min(num_samples, len(lines) - 1)]]


def keras_onehot(pairs):
    """The example's vocabulary and one-hot arrays, built with its own loop (docs/design.md, "One-hot input as a
    row gather")."""
    input_texts, target_texts = [], []
    input_characters, target_characters = set(), set()
    for input_text, target_text in pairs:
        target_text = "\t" + target_text + "\n"
        input_texts.append(input_text)
        target_texts.append(target_text)
        for char in input_text:
            input_characters.add(char)
        for char in target_text:
            target_characters.add(char)
    input_characters = sorted(list(input_characters))
    target_characters = sorted(list(target_characters))
    num_encoder_tokens = len(input_characters)
    num_decoder_tokens = len(target_characters)
    max_encoder_seq_length = max([len(txt) for txt in input_texts])
    max_decoder_seq_length = max([len(txt) for txt in target_texts])
    input_token_index = dict([(char, i) for i, char in enumerate(input_characters)])
    target_token_index = dict([(char, i) for i, char in enumerate(target_characters)])
    n = len(input_texts)
    encoder_input_data = np.zeros((n, max_encoder_seq_length, num_encoder_tokens), dtype="float32")
    decoder_input_data = np.zeros((n, max_decoder_seq_length, num_decoder_tokens), dtype="float32")
    decoder_target_data = np.zeros((n, max_decoder_seq_length, num_decoder_tokens), dtype="float32")
    for i, (input_text, target_text) in enumerate(zip(input_texts, target_texts, strict=True)):
        for t, char in enumerate(input_text):
            encoder_input_data[i, t, input_token_index[char]] = 1.0
        encoder_input_data[i, t + 1 :, input_token_index[" "]] = 1.0
        for t, char in enumerate(target_text):
            # decoder_target_data is ahead of decoder_input_data by one timestep
            decoder_input_data[i, t, target_token_index[char]] = 1.0
            if t > 0:
                decoder_target_data[i, t - 1, target_token_index[char]] = 1.0
        decoder_input_data[i, t + 1 :, target_token_index[" "]] = 1.0
        decoder_target_data[i, t:, target_token_index[" "]] = 1.0
    return dict(
        input_characters=input_characters,
        target_characters=target_characters,
        max_encoder_seq_length=max_encoder_seq_length,
        max_decoder_seq_length=max_decoder_seq_length,
        encoder_input_data=encoder_input_data,
        decoder_input_data=decoder_input_data,
        decoder_target_data=decoder_target_data,
    )


def assert_matches_keras(ds: Dataset, ref) -> None:
    assert ds.input_vocab.chars == ref["input_characters"]
    assert ds.target_vocab.chars == ref["target_characters"]
    assert ds.max_encoder_len == ref["max_encoder_seq_length"]
    assert ds.max_decoder_len == ref["max_decoder_seq_length"]
    for ids in (ds.encoder_input_ids, ds.decoder_input_ids, ds.decoder_target_ids):
        assert ids.dtype == np.int32
    eye_in = np.eye(len(ds.input_vocab), dtype=np.float32)
    eye_out = np.eye(len(ds.target_vocab), dtype=np.float32)
    assert np.array_equal(eye_in[ds.encoder_input_ids], ref["encoder_input_data"])
    assert np.array_equal(eye_out[ds.decoder_input_ids], ref["decoder_input_data"])
    assert np.array_equal(eye_out[ds.decoder_target_ids], ref["decoder_target_data"])


def test_tiny_matches_keras_example():
    pairs = read_pairs(TINY)
    assert pairs == keras_read(TINY, 10_000)
    assert len(pairs) == 12
    ds = Dataset.from_pairs(pairs)
    assert_matches_keras(ds, keras_onehot(pairs))
    assert ds.target_texts[0] == START + "Va !" + END
    assert ds.target_vocab.decode(ds.decoder_input_ids[0]) == "\tVa !\n".ljust(ds.max_decoder_len)
    assert ds.target_vocab.decode(ds.decoder_target_ids[0]) == "Va !\n".ljust(ds.max_decoder_len)
    assert ds.input_vocab.decode(ds.encoder_input_ids[6]) == "Where is the café?".ljust(ds.max_encoder_len)


def test_first_10k_pairs_match_keras_example_and_known_numbers():
    path = shared_fra()
    pairs = read_pairs(path, 10_000)
    assert pairs == keras_read(path, 10_000)
    ds = Dataset.from_pairs(pairs)
    assert len(ds) == 10_000
    assert (len(ds.input_vocab), len(ds.target_vocab)) == (70, 93)
    assert (ds.max_encoder_len, ds.max_decoder_len) == (16, 59)
    assert ds.summary().splitlines() == [
        "Number of samples: 10000",
        "Number of unique input tokens: 70",
        "Number of unique output tokens: 93",
        "Max sequence length for inputs: 16",
        "Max sequence length for outputs: 59",
    ]
    train, val = split_validation(len(ds), 0.2)
    assert (len(train), len(val)) == (8000, 2000)
    assert_matches_keras(ds, keras_onehot(pairs))


def test_full_file_reads_and_encodes():
    path = shared_fra()
    pairs = read_pairs(path)
    ds = Dataset.from_pairs(pairs)
    assert len(ds) == 167_130
    assert ds.encoder_input_ids.shape == (167_130, ds.max_encoder_len)
    assert ds.decoder_target_ids.shape == (167_130, ds.max_decoder_len)
    # Spot-check rows against the plain per-sentence encoding.
    for i in (0, 83_000, 167_129):
        en, fr = pairs[i]
        assert ds.encoder_input_ids[i].tolist() == ds.input_vocab.encode(en.ljust(ds.max_encoder_len))
        target = (START + fr + END).ljust(ds.max_decoder_len)
        assert ds.decoder_input_ids[i].tolist() == ds.target_vocab.encode(target)
    # Memory grows with the data in ids (4 bytes per position), not in one-hot floats (4 bytes per vocabulary entry
    # per position: 71 GB here).
    positions = len(ds) * (ds.max_encoder_len + 2 * ds.max_decoder_len)
    assert sum(a.nbytes for a in (ds.encoder_input_ids, ds.decoder_input_ids, ds.decoder_target_ids)) == 4 * positions


# ------------------------------------------------------------------------------------ the built-in subset


def test_default_subset_is_first_10k_lines_of_fra_txt():
    path = shared_fra()
    with open(path, "rb") as f:
        first = b"".join(next(f) for _ in range(10_000))
    assert gzip.decompress(DEFAULT_DATA.read_bytes()) == first
    assert resolve_pairs(None, 10_000) == read_pairs(path, 10_000)


def test_default_subset_loads():
    pairs = resolve_pairs(None, 10_000)
    assert len(pairs) == 10_000
    assert pairs[:3] == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours\u202f!")]
    assert resolve_pairs(None, None) == pairs
    assert resolve_pairs(None, 5) == pairs[:5]
    assert data.load_default_pairs(7) == pairs[:7]
    # gzip header is reproducible: mtime 0, no file name
    head = DEFAULT_DATA.read_bytes()[:10]
    assert head[3] == 0 and head[4:8] == b"\0\0\0\0"
    assert (DEFAULT_DATA.parent / "ATTRIBUTION.txt").read_text(encoding="utf-8").count("CC-BY 2.0") >= 1


def test_default_subset_too_small_for_request():
    with pytest.raises(MinilstmError, match=r"built-in data subset has 10,000 .*--data PATH"):
        resolve_pairs(None, 10_001)


def test_resolve_pairs_user_file(tmp_path):
    assert resolve_pairs(TINY, 3) == read_pairs(TINY)[:3]
    assert resolve_pairs(TINY, 1000) == read_pairs(TINY)  # like Keras: what is there


# ----------------------------------------------------------------------------------------------- reading


def write(tmp_path, content: bytes, name="pairs.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_three_columns_read_like_two(tmp_path):
    two = write(tmp_path, b"Go.\tVa !\nI see.\tJe vois.\n", "two.txt")
    three = write(tmp_path, b"Go.\tVa !\tCC-BY 2.0 (France)\nI see.\tJe vois.\tCC-BY 2.0 #1 & #2\n")
    assert read_pairs(three) == read_pairs(two) == [("Go.", "Va !"), ("I see.", "Je vois.")]
    tiny = read_pairs(TINY)
    assert tiny[2] == ("I see.", "Je comprends.") and tiny[3] == ("Thanks!", "Merci !")


def test_line_endings_bom_and_gzip(tmp_path):
    expected = [("Go.", "Va !"), ("Été.", "Summer.")]
    variants = {
        "lf.txt": "Go.\tVa !\nÉté.\tSummer.\n",
        "crlf.txt": "Go.\tVa !\r\nÉté.\tSummer.\r\n",
        "no_final_newline.txt": "Go.\tVa !\nÉté.\tSummer.",
        "trailing_blank_lines.txt": "Go.\tVa !\nÉté.\tSummer.\n\n\n",
        "bom.txt": "\ufeffGo.\tVa !\nÉté.\tSummer.\n",
    }
    for name, text in variants.items():
        assert read_pairs(write(tmp_path, text.encode(), name)) == expected, name
    gz = write(tmp_path, gzip.compress(TINY.read_bytes()), "tiny.txt.gz")
    assert read_pairs(gz) == read_pairs(TINY)
    assert read_pairs(gz, 4) == read_pairs(TINY)[:4]


def test_num_samples_stops_reading(tmp_path):
    p = write(tmp_path, b"Go.\tVa !\nHi.\tSalut !\n\nno tab here\n\xff\xfe\n")
    assert read_pairs(p, 2) == [("Go.", "Va !"), ("Hi.", "Salut !")]
    with pytest.raises(MinilstmError, match=r":3: empty line"):
        read_pairs(p, 3)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "no sentence pairs found"),
        (b"\n\n", "no sentence pairs found"),
        (b"Go.\tVa !\nHi. Salut !\n", ":2: expected 'english<TAB>french', found no tab"),
        (
            b"Go.\tVa !\nHi.\tSalut !\nA\tB\tC\tD\n",
            ":3: expected 'english<TAB>french' (optionally <TAB>attribution), found 4 tab-separated columns",
        ),
        (b"Go.\tVa !\nHi.\tSalut \xe9 !\n", ":2: not valid UTF-8 (byte 0xe9"),
        (b"Go.\tVa !\n\tSalut !\n", ":2: the English side (first column) is empty"),
        (b"Go.\tVa !\nHi.\t  \tattribution\n", ":2: the French side (second column) is empty"),
        (b"Go.\tVa !\n\nHi.\tSalut !\n", ":2: empty line between sentence pairs"),
    ],
)
def test_read_errors(tmp_path, content, fragment):
    p = write(tmp_path, content)
    with pytest.raises(MinilstmError) as info:
        read_pairs(p)
    message = str(info.value)
    assert fragment in message
    assert str(p) in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(MinilstmError) as info:
        read_pairs(missing)
    assert str(info.value) == (
        f"data file not found: {missing} (pass --data PATH to a tab-separated English<TAB>French file,"
        " or omit --data for the built-in subset)"
    )
    with pytest.raises(MinilstmError, match="is a directory"):
        read_pairs(tmp_path)


def test_bad_arguments_and_corrupt_gzip(tmp_path):
    with pytest.raises(MinilstmError, match="at least 1"):
        read_pairs(TINY, 0)
    with pytest.raises(MinilstmError, match="cannot read data file"):
        read_pairs(write(tmp_path, b"this is not gzip data", "x.txt.gz"))
    truncated = gzip.compress(TINY.read_bytes() * 50)[:-40]
    with pytest.raises(MinilstmError, match="cannot read data file"):
        read_pairs(write(tmp_path, truncated, "y.txt.gz"))


# ---------------------------------------------------------------------------------- vocabulary and ids


def test_vocab():
    v = Vocab.from_texts(["bca", "ab"])
    assert v.chars == [" ", "a", "b", "c"] and len(v) == 4  # space added for padding
    assert Vocab.from_texts(["b a"]).chars == Vocab.from_texts(["b a"], extra="").chars == [" ", "a", "b"]
    assert v.index == {" ": 0, "a": 1, "b": 2, "c": 3}
    assert v.encode("cab") == [3, 1, 2] and v.decode([3, 1, 2]) == "cab"
    assert v.decode(np.array([0, 1], dtype=np.int32)) == " a"
    assert v.unknown_chars("zabyz") == ["y", "z"]
    assert Vocab.from_json(v.to_json()) == v
    with pytest.raises(MinilstmError, match="'z'"):
        v.encode("zab")
    with pytest.raises(MinilstmError):
        Vocab.from_json(["a", "ab"])
    with pytest.raises(MinilstmError):
        Vocab.from_json(["a", "a"])


def test_from_pairs_with_given_vocab_and_lengths():
    pairs = read_pairs(TINY)
    ds = Dataset.from_pairs(pairs)
    vocabs = (ds.input_vocab, ds.target_vocab)
    again = Dataset.from_pairs(pairs[:3], *vocabs, ds.max_encoder_len, ds.max_decoder_len)
    assert np.array_equal(again.encoder_input_ids, ds.encoder_input_ids[:3])
    assert np.array_equal(again.decoder_target_ids, ds.decoder_target_ids[:3])
    with pytest.raises(MinilstmError) as info:
        Dataset.from_pairs([("Go.", "Va !"), ("Straße €5", "Rue"), ("ß", "x")], *vocabs)
    message = str(info.value)
    assert "'5', 'ß', '€'" in message and '"Straße €5"' in message and "input vocabulary" in message
    assert "(and 1 more sentence)" in message
    with pytest.raises(MinilstmError, match=r"'Z'.*output vocabulary"):
        Dataset.from_pairs([("Go.", "Zut !")], ds.input_vocab, ds.target_vocab)
    with pytest.raises(MinilstmError, match="too long: 23 characters"):
        Dataset.from_pairs([("We're at the hôtel now.", "Va !")], ds.input_vocab, ds.target_vocab, 19, None)
    with pytest.raises(MinilstmError, match="too long"):
        Dataset.from_pairs([("Go.", "Va !")], None, None, None, 5)  # "\tVa !\n" is 6 characters
    with pytest.raises(MinilstmError, match="no sentence pairs"):
        Dataset.from_pairs([])


def test_subset_and_summary():
    ds = Dataset.from_pairs(read_pairs(TINY))
    sub = ds.subset([5, 1])
    assert sub.input_texts == [ds.input_texts[5], ds.input_texts[1]] and len(sub) == 2
    assert sub.input_vocab is ds.input_vocab and sub.max_decoder_len == ds.max_decoder_len
    assert np.array_equal(sub.decoder_input_ids, ds.decoder_input_ids[[5, 1]])
    assert sub.summary().splitlines()[0] == "Number of samples: 2"


def test_encode_inputs():
    ds = Dataset.from_pairs(read_pairs(TINY))
    ids = encode_inputs(["Go.", "I see."], ds.input_vocab, ds.max_encoder_len)
    assert ids.dtype == np.int32 and ids.shape == (2, ds.max_encoder_len)
    assert np.array_equal(ids, ds.encoder_input_ids[[0, 2]])
    long = "Where is the hôtel? I see the café."
    wide = encode_inputs(["Go.", long], ds.input_vocab, 4)
    assert wide.shape == (2, len(long))
    assert ds.input_vocab.decode(wide[0]) == "Go.".ljust(len(long))
    assert ds.input_vocab.decode(wide[1]) == long
    with pytest.raises(MinilstmError) as info:
        encode_inputs(["Go.", "Ich heiße € ß"], ds.input_vocab, 16)
    assert str(info.value).startswith("unknown character(s) ")
    assert "'ß', '€'" in str(info.value) and '"Ich heiße € ß"' in str(info.value)
    assert "not in the model's input vocabulary" in str(info.value)
    with pytest.raises(MinilstmError, match="empty sentence"):
        encode_inputs(["Go.", ""], ds.input_vocab, 16)
    # characters outside the BMP, and undecodable command-line bytes (surrogate escapes)
    v = Vocab.from_texts(["a😀"])
    assert v.decode(encode_inputs(["😀a"], v, 3)[0]) == "😀a "
    with pytest.raises(MinilstmError, match=r"'\\udce9'"):
        encode_inputs(["caf\udce9"], v, 3)
    assert PAD == " " and START == "\t" and END == "\n"


# ----------------------------------------------------------------------------------- split and batches


def test_split_validation():
    train, val = split_validation(10, 0.25)  # int(10 * 0.75) = 7
    assert train.tolist() == list(range(7)) and val.tolist() == [7, 8, 9]
    train, val = split_validation(10_000)
    assert (train[0], train[-1], val[0], val[-1]) == (0, 7999, 8000, 9999)
    train, val = split_validation(5, 0.0)
    assert len(train) == 5 and len(val) == 0
    for n, split in [(10, 1.0), (10, -0.1), (1, 0.5), (1, 0.2), (10, 1e-17)]:
        with pytest.raises(MinilstmError):
            split_validation(n, split)


def grouped_sentences(rng, sentences=400, most=6) -> list[str]:
    """English sides with 1 to ``most`` pairs per sentence, the copies scattered over the file (as in fra.txt)."""
    english = [f"sentence {k}" for k in range(sentences) for _ in range(rng.integers(1, most + 1))]
    return [english[k] for k in rng.permutation(len(english))]


def assert_grouped_split(english, train, val, fraction, most):
    """Every row on exactly one side, each side in file order, no sentence on both, ``fraction`` within one
    sentence's pairs (the split takes whole sentences)."""
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(english)))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert not {english[k] for k in train} & {english[k] for k in val}
    assert abs(len(val) - fraction * len(english)) <= most / 2


@pytest.mark.parametrize("fraction", [0.2, 0.05, 0.5])
def test_split_validation_random_is_grouped_seeded_and_close_to_the_fraction(rng, fraction):
    english = grouped_sentences(rng)
    train, val = split_validation_random(english, fraction, seed=3)
    assert_grouped_split(english, train, val, fraction, most=6)
    again = split_validation_random(english, fraction, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    other = split_validation_random(english, fraction, seed=4)[1]
    assert not np.array_equal(other, val)
    # Through the dispatcher train and evaluate use, with the pairs' French sides ignored; `last` is Keras's split.
    pairs = [(e, f"fr {k}") for k, e in enumerate(english)]
    assert np.array_equal(validation_rows(pairs, fraction, "random", 3)[1], val)
    assert all(np.array_equal(a, b) for a, b in zip(validation_rows(pairs, fraction, "last", 3),
                                                      split_validation(len(pairs), fraction), strict=True))


def test_split_validation_random_draws_from_its_own_stream(rng):
    """The split uses a generator of its own: numpy's global state, and the weights' and shuffling's streams of the
    same --seed (children 0 and 1 of SeedSequence(seed), as train.py spawns them), draw the same numbers after it.
    (tests/test_cli.py checks the same on a whole training run's initial weights and shuffling.)"""
    english = grouped_sentences(rng)
    seed_sequence = np.random.SeedSequence(0)

    def draws():
        children = seed_sequence.spawn(2)
        return [np.random.default_rng(child).random(4).tolist() for child in children], np.random.random()

    np.random.seed(5)
    before = draws()
    seed_sequence = np.random.SeedSequence(0)
    np.random.seed(5)
    split_validation_random(english, 0.2, seed=0)
    assert draws() == before


def test_split_validation_random_edges_and_errors():
    train, val = split_validation_random(["a", "b", "a"], 0.0)
    assert train.tolist() == [0, 1, 2] and val.tolist() == []
    # At least one sentence is held out, whatever the fraction; all of its pairs go.
    train, val = split_validation_random(["a", "b", "a", "c"], 0.01, seed=1)
    assert len(val) >= 1 and len({"abac"[k] for k in val}) == 1
    for english, fraction, seed, fragment in [
        (["a", "a", "a"], 0.2, 0, "leaves no training samples"),  # one sentence: cannot be on one side only
        (["a", "b"], 1.0, 0, "--validation-split must be in [0, 1)"),
        (["a", "b"], -0.1, 0, "--validation-split must be in [0, 1)"),
        (["a", "b"], 0.5, -1, "--seed must be a non-negative integer"),
    ]:
        with pytest.raises(MinilstmError, match=re.escape(fragment)) as error:
            split_validation_random(english, fraction, seed)
        assert "\n" not in str(error.value)
    with pytest.raises(MinilstmError, match="unknown validation split mode 'middle'") as error:
        validation_rows([("a", "x"), ("b", "y")], 0.5, "middle")
    assert "\n" not in str(error.value)


def test_split_validation_random_on_the_whole_file():
    """fra.txt's 167,130 pairs: grouped, a fifth of them, and not just the file's last (longest) sentences."""
    pairs = read_pairs(shared_fra())
    english = [e for e, _ in pairs]
    train, val = split_validation_random(english, 0.2, seed=0)
    most = max(np.unique(english, return_counts=True)[1])
    assert_grouped_split(english, train, val, 0.2, most)
    words = np.array([len(english[k].split()) for k in val])
    assert (words <= 3).sum() > 100 and (words >= 11).sum() > 100
    assert val[0] < len(pairs) // 10


def test_iterate_batches():
    indices = np.arange(100, 300)
    batches = list(iterate_batches(indices, 64, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [64, 64, 64, 8]
    assert sorted(np.concatenate(batches).tolist()) == indices.tolist()
    assert not np.array_equal(np.concatenate(batches), indices)  # shuffled

    rng = np.random.default_rng(42)
    epoch1 = np.concatenate(list(iterate_batches(indices, 64, rng)))
    epoch2 = np.concatenate(list(iterate_batches(indices, 64, rng)))
    assert not np.array_equal(epoch1, epoch2)
    rng = np.random.default_rng(42)
    assert np.array_equal(np.concatenate(list(iterate_batches(indices, 64, rng))), epoch1)
    assert np.array_equal(np.concatenate(list(iterate_batches(indices, 64, rng))), epoch2)

    ordered = list(iterate_batches(indices, 50, None))
    assert [b.tolist() for b in ordered] == [list(range(100 + 50 * k, 150 + 50 * k)) for k in range(4)]
    with pytest.raises(MinilstmError):
        list(iterate_batches(indices, 0, None))


# ---------------------------------------------------------------------------------------------- download


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    """Behaves like manythings.org: 406 for urllib's default User-Agent or none; else serves by path."""

    routes: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        agent = self.headers.get("User-Agent")
        if agent is None or agent.startswith("Python-urllib"):
            self.send_error(406, "Not Acceptable")
            return
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    Handler.routes = {
        "/fra-eng.zip": make_zip({"_about.txt": b"about", "fra.txt": TINY.read_bytes()}),
        "/nested.zip": make_zip({"fra-eng/fra.txt": TINY.read_bytes()}),
        "/nofra.zip": make_zip({"_about.txt": b"about"}),
        "/html.zip": b"<html><body>Not here</body></html>",
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download(server, tmp_path):
    # The test server really refuses urllib's default User-Agent, as manythings.org does.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server + "/fra-eng.zip", timeout=10)
    assert info.value.code == 406

    dest = tmp_path / "new" / "dir"
    path = download(dest, url=server + "/fra-eng.zip", timeout=10)
    assert path == dest / "fra.txt"
    assert path.read_bytes() == TINY.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["fra.txt"]
    assert read_pairs(path) == read_pairs(TINY)

    path.write_bytes(b"old content")  # replaced, not appended to
    assert download(dest, url=server + "/nested.zip", timeout=10).read_bytes() == TINY.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["fra.txt"]


@pytest.mark.parametrize(
    "route, fragment",
    [
        ("/missing.zip", "HTTP 404"),
        ("/html.zip", "did not give a zip archive"),
        ("/nofra.zip", "has no fra.txt"),
    ],
)
def test_download_errors(server, tmp_path, route, fragment):
    with pytest.raises(MinilstmError) as info:
        download(tmp_path, url=server + route, timeout=10)
    message = str(info.value)
    assert fragment in message and "--data" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_download_connection_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MinilstmError, match="download of .* failed: .*--data"):
        download(tmp_path, url=f"http://127.0.0.1:{port}/fra-eng.zip", timeout=5)


def test_download_command(server, tmp_path, capsys):
    from minilstm import download as download_command
    from minilstm.cli import run_main

    assert run_main(download_command.main, ["--dir", str(tmp_path), "--url", server + "/fra-eng.zip"]) == 0
    assert (tmp_path / "fra.txt").read_bytes() == TINY.read_bytes()
    assert "--data" in capsys.readouterr().out
    assert run_main(download_command.main, ["--dir", str(tmp_path / "x"), "--url", server + "/missing.zip"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: download of")
