"""Text tokenizers: round trips, specials, vocab sizes, config errors."""

import ml_collections
import pytest

from audiolm.config import ConfigError
from audiolm.data import tokenizer as tok


def test_bytes_round_trip_and_specials():
    t = tok.ByteTokenizer()
    assert (t.pad_id, t.bos_id, t.eos_id, t.vocab_size) == (0, 1, 2, 259)
    text = "the red dog — naïve 東京 ok?"
    ids = t.encode(text)
    assert min(ids) >= 3 and max(ids) < 259
    assert t.encode("A") == [ord("A") + 3]
    assert t.decode(ids) == text
    with_specials = t.encode_with_specials(text)
    assert with_specials[0] == 1 and with_specials[-1] == 2
    assert t.decode([0, 0, *with_specials, 0]) == text  # specials and padding dropped


def test_chars_round_trip_unknown_and_errors():
    t = tok.CharTokenizer()
    assert t.vocab_size == len(tok.DEFAULT_ALPHABET) + 4
    assert t.specials == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    text = "there are twelve boxes in the park"
    assert t.decode(t.encode(text)) == text
    assert t.encode(" a") == [4, 5]
    assert t.decode(t.encode("Hi")) == "?i"  # uppercase is not in the default alphabet
    with pytest.raises(ValueError, match="distinct"):
        tok.CharTokenizer("abca")


def test_make_tokenizer_from_config():
    cfg = ml_collections.ConfigDict({"tokenizer": "chars", "alphabet": "ab ", "spm_path": ""})
    t = tok.make_tokenizer(cfg)
    assert t.vocab_size == 7 and t.decode(t.encode("ab ba")) == "ab ba"
    cfg.tokenizer = "bytes"
    assert isinstance(tok.make_tokenizer(cfg), tok.ByteTokenizer)
    cfg.tokenizer = "words"
    with pytest.raises(ConfigError, match="data.tokenizer='words'"):
        tok.make_tokenizer(cfg)
    cfg.tokenizer = "sentencepiece"
    with pytest.raises(ConfigError, match="data.spm_path"):
        tok.make_tokenizer(cfg)


def test_sentencepiece_model_file(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from audiolm.data import speech_synth

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(speech_synth.sentences(300, 0)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "m"),
                                   vocab_size=60, model_type="unigram", minloglevel=2)
    cfg = ml_collections.ConfigDict({"tokenizer": "sentencepiece", "alphabet": "",
                                     "spm_path": str(tmp_path / "m.model")})
    t = tok.make_tokenizer(cfg)
    assert t.vocab_size == 63
    text = "the quiet horse waits near the harbour"
    ids = t.encode(text)
    assert min(ids) >= 3 and len(ids) < len(text)
    assert t.decode(t.encode_with_specials(text)) == text
    with pytest.raises(FileNotFoundError, match="nope.model"):
        tok.SentencePieceTokenizer(str(tmp_path / "nope.model"))
