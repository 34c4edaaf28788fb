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

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SMILES_REGEX = (
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
_PATTERN = re.compile(SMILES_REGEX)
SPECIAL_TOKENS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "mask": "<mask>", "unk": "<unk>"}
# Fixed ids for the special tokens, so checkpoints and tokenizers always agree on them.
SPECIAL_ORDER = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>")


def split_smiles(smiles: str) -> list[str]:
    """Regex tokens of a SMILES; characters outside the grammar become their own (unknown) pieces."""
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
