"""MoLFormer-style SMILES tokenizer in Hugging Face ``tokenizers`` / ``transformers`` format.

Tokens come from the SMILES regular expression used by MoLFormer (after Schwaller et al., 2019):
bracket atoms as one token, two-letter halogens ``Br``/``Cl``, aromatic atoms, bonds, branches and ring
closures including ``%nn``. Anything the regex does not match becomes ``<unk>``.

>>> tok = build_tokenizer(["CCO", "c1ccccc1Br"])
>>> tok.convert_ids_to_tokens(tok("CBr")["input_ids"])
['<bos>', 'C', 'Br', '<eos>']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from models.library_logs import route_library_logs

route_library_logs()  # transformers just gave its logger a console handler of its own

SMILES_REGEX = (
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
_PATTERN = re.compile(SMILES_REGEX)
SPECIAL_TOKENS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "mask": "<mask>", "unk": "<unk>"}
# Fixed ids for the special tokens, so checkpoints and tokenizers always agree on them.
SPECIAL_ORDER = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>")


def split_smiles(smiles: str) -> list[str]:
    """Regex tokens of a SMILES; characters outside the grammar become their own (unknown) pieces."""
    pieces = _PATTERN.findall(smiles)
    if "".join(pieces) == smiles:  # the common case: the grammar covers every character
        return pieces
    tokens: list[str] = []
    pos = 0
    for match in _PATTERN.finditer(smiles):
        if match.start() > pos:
            tokens.append(smiles[pos : match.start()])
        tokens.append(match.group(0))
        pos = match.end()
    if pos < len(smiles):
        tokens.append(smiles[pos:])
    return tokens


def build_vocab(corpus: Iterable[str], min_frequency: int = 1) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for smiles in corpus:
        counts.update(t for t in _PATTERN.findall(smiles))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_ORDER)}
    for tok, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= min_frequency and tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def tokenizer_from_vocab(vocab: dict[str, int], model_max_length: int = 512) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(SMILES_REGEX), behavior="isolated")
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        mask_token="<mask>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def build_tokenizer(
    corpus: Iterable[str], min_frequency: int = 1, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Build the vocabulary from a SMILES corpus and return a fast tokenizer."""
    return tokenizer_from_vocab(build_vocab(corpus, min_frequency), model_max_length)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path))


class RegexTokenizer:
    """The fast tokenizer's ids without its per-call overhead, for many SMILES at once.

    Same pieces (:func:`split_smiles`), same vocabulary lookup (unknown pieces -> ``<unk>``), same
    ``<bos> ... <eos>`` template and the same right-side truncation to ``max_length`` ids as
    ``tokenizer(texts, truncation=True, max_length=max_length)``; about 5 us per SMILES instead of
    about 35 us, and the ids come back as two flat arrays (ids, lengths) ready to pad or ship between
    processes. :meth:`from_fast_tokenizer` checks the identity on probe SMILES before use.
    """

    def __init__(self, vocab: dict[str, int], bos_id: int, eos_id: int, unk_id: int, pad_id: int,
                 max_length: int = 512) -> None:
        if max_length < 2:
            raise ValueError("max_length must leave room for <bos> and <eos>")
        self.vocab = dict(vocab)
        self.bos_id, self.eos_id, self.unk_id, self.pad_id = bos_id, eos_id, unk_id, pad_id
        self.max_length = max_length

    @classmethod
    def from_fast_tokenizer(cls, tokenizer: PreTrainedTokenizerFast, max_length: int,
                                  probe: Iterable[str] = ()) -> RegexTokenizer | None:
        """The equivalent of ``tokenizer`` (a :func:`tokenizer_from_vocab` tokenizer), or ``None`` when
        its ids differ on ``probe`` plus a few built-in SMILES (then keep using ``tokenizer``)."""
        ids = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id]
        if any(i is None for i in ids):
            return None
        fast = cls(tokenizer.get_vocab(), *ids, max_length=max_length)
        texts = list(_PROBE) + ["C" * (max_length + 3)] + list(probe)
        want = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        flat, lengths = fast.encode_flat(texts)
        got = [row.tolist() for row in np.split(flat, np.cumsum(lengths)[:-1])]
        return fast if got == want else None

    def encode(self, smiles: str) -> list[int]:
        pieces = split_smiles(smiles)
        get, unk = self.vocab.get, self.unk_id
        return [self.bos_id, *[get(p, unk) for p in pieces[: self.max_length - 2]], self.eos_id]

    def encode_flat(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """All ids concatenated (int32) and the number of ids per text (int64)."""
        flat: list[int] = []
        lengths: list[int] = []
        for text in texts:
            ids = self.encode(text)
            flat += ids
            lengths.append(len(ids))
        return np.array(flat, dtype=np.int32), np.array(lengths, dtype=np.int64)


# Probe SMILES for RegexTokenizer.from_fast_tokenizer: bracket atoms, halogens, %nn ring closures,
# stereo bonds, charges, dative bonds and a character outside the grammar.
_PROBE = ("CCO", "C[C@@H](N)C(=O)[O-]", "BrCCCl", "c1ccc2c(c1)CC%10CC2%10", "F/C=C\\F", "[nH]1cccc1",
          "C->[Fe]", "C<-[Fe]", "CC(=O)[O-].[Na+]", "C[Se]C", "C$C", "*C", "C1CC1|")
