"""MoLFormer-style SMILES tokenizer: regex round-trips, the token classes, fixed special ids and the
Hugging Face save/load format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.tokenizer import (
    SPECIAL_ORDER,
    RegexTokenizer,
    build_tokenizer,
    build_vocab,
    load_tokenizer,
    split_smiles,
)


@pytest.fixture(scope="module")
def bbbp_tokenizer(bbbp_smiles: list[str]):
    return build_tokenizer(bbbp_smiles)


def test_regex_tokens_rejoin_to_every_bbbp_smiles(bbbp_smiles: list[str]) -> None:
    for smiles in bbbp_smiles:
        assert "".join(split_smiles(smiles)) == smiles


def test_fast_tokenizer_round_trips_every_bbbp_smiles(bbbp_smiles: list[str], bbbp_tokenizer) -> None:
    unk = bbbp_tokenizer.unk_token_id
    encoded = bbbp_tokenizer(bbbp_smiles, add_special_tokens=False)["input_ids"]
    for smiles, ids in zip(bbbp_smiles, encoded, strict=True):
        assert unk not in ids  # the vocabulary was built from this corpus
        assert "".join(bbbp_tokenizer.convert_ids_to_tokens(ids)) == smiles
        assert [bbbp_tokenizer.convert_tokens_to_ids(t) for t in split_smiles(smiles)] == ids


@pytest.mark.parametrize(
    ("smiles", "tokens"),
    [
        ("C[C@@H](N)C(=O)[O-]", ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "[O-]"]),
        ("BrCCCl", ["Br", "C", "C", "Cl"]),
        ("c1ccc2c(c1)CC%10CC2%10", ["c", "1", "c", "c", "c", "2", "c", "(", "c", "1", ")", "C", "C", "%10",
                                    "C", "C", "2", "%10"]),
        ("C#N.[Na+]", ["C", "#", "N", ".", "[Na+]"]),
        ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
        ("[nH]1cccc1", ["[nH]", "1", "c", "c", "c", "c", "1"]),
    ],
)
def test_token_classes(smiles: str, tokens: list[str]) -> None:
    assert split_smiles(smiles) == tokens


def test_special_tokens_have_fixed_ids(bbbp_tokenizer) -> None:
    tok = build_tokenizer(["CCO"])  # a different corpus gives the same special ids
    for t in (tok, bbbp_tokenizer):
        assert [t.convert_tokens_to_ids(s) for s in SPECIAL_ORDER] == list(range(len(SPECIAL_ORDER)))
        special_ids = (t.pad_token_id, t.unk_token_id, t.bos_token_id, t.eos_token_id, t.mask_token_id)
        assert special_ids == (0, 1, 2, 3, 4)
    ids = tok("CCO")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 5


def test_unknown_tokens_and_padding() -> None:
    tok = build_tokenizer(["CCO"])
    ids = tok(["C[Se]C", "C"], padding=True)
    assert ids["input_ids"][0] == [2, tok.convert_tokens_to_ids("C"), 1, tok.convert_tokens_to_ids("C"), 3]
    assert ids["input_ids"][1][-2:] == [0, 0] and ids["attention_mask"][1] == [1, 1, 1, 0, 0]


def test_vocab_order_is_by_frequency_then_token() -> None:
    vocab = build_vocab(["CCO", "CCN", "OC"], min_frequency=1)
    assert list(vocab)[len(SPECIAL_ORDER):] == ["C", "O", "N"]
    assert "N" not in build_vocab(["CCO", "CCN", "OC"], min_frequency=2)


def test_save_load_hf_format_gives_identical_ids(
    bbbp_smiles: list[str], bbbp_tokenizer, tmp_path: Path
) -> None:
    bbbp_tokenizer.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    loaded = load_tokenizer(tmp_path)
    sample = bbbp_smiles[:300]
    assert loaded(sample)["input_ids"] == bbbp_tokenizer(sample)["input_ids"]
    assert loaded.get_vocab() == bbbp_tokenizer.get_vocab()
    assert (loaded.pad_token, loaded.mask_token, loaded.model_max_length) == ("<pad>", "<mask>", 512)


def test_regex_tokenizer_gives_the_fast_tokenizers_ids(data_dir: Path, bbbp_tokenizer) -> None:
    """The pipeline workers' tokenizer: identical ids (incl. <unk>, gaps outside the grammar and
    truncation) to ``tokenizer(texts, truncation=True, max_length=...)`` on thousands of molecules."""
    moses = pd.read_csv(data_dir / "pretrain" / "moses_test.csv.gz", nrows=3000)["SMILES"].tolist()
    tox = pd.read_csv(data_dir / "moleculenet" / "tox21.csv", usecols=["smiles"])["smiles"].tolist()[:2000]
    texts = moses + tox + ["C" * 600, "c1ccccc1" * 70, "C<-[Fe]", "C1CC1|C", "[Se]1C=CC=C1"]
    for max_length in (512, 40):
        fast = RegexTokenizer.from_fast_tokenizer(bbbp_tokenizer, max_length)
        assert fast is not None
        want = bbbp_tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        flat, lengths = fast.encode_flat(texts)
        assert flat.dtype == np.int32 and lengths.tolist() == [len(w) for w in want]
        assert flat.tolist() == [i for w in want for i in w]
        assert any(bbbp_tokenizer.unk_token_id in w for w in want)  # unknown pieces really covered
        assert max(lengths) == max_length


def test_regex_tokenizer_refuses_a_tokenizer_with_other_ids(bbbp_tokenizer) -> None:
    other = build_tokenizer(["CCO"])
    other.backend_tokenizer.post_processor = bbbp_tokenizer.backend_tokenizer.post_processor  # same template
    from tokenizers import pre_tokenizers

    other.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # a different split
    assert RegexTokenizer.from_fast_tokenizer(other, 512) is None
