"""Masked-language-model pretraining of the SMILES transformer (BERT recipe, Devlin et al., 2019).

Of the maskable tokens (everything except ``<pad>``, ``<bos>``, ``<eos>``) each is selected with
probability ``p = 0.15``; every sequence gets at least one selected token. A selected token is
replaced by ``<mask>`` with probability 0.8, by a uniformly drawn non-special token with probability
0.1, and kept with probability 0.1; the loss is the cross-entropy of the original token at the
selected positions only.

The whole tokenised corpus lives on the training device as one right-padded ``uint8`` matrix, so a
batch is a row gather plus a trim to its longest row: no loader processes, the GPU never waits.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.smiles_encoder import MolFormerConfig, MolFormerForMaskedLM, save_smiles_encoder
from models.tokenizer import SPECIAL_ORDER

MASK_PROB = 0.15
REPLACE_MASK = 0.8
REPLACE_RANDOM = 0.1
IGNORE_INDEX = -100


@dataclass
class TokenCorpus:
    """Right-padded token ids ``[N, L]`` (pad id 0) and the length of every row."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def to(self, device: torch.device) -> TokenCorpus:
        return TokenCorpus(self.ids.to(device), self.lengths.to(device))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids int64 [B, Lb], attention_mask int64 [B, Lb])`` trimmed to the batch's longest row."""
        lengths = self.lengths[indices]
        width = int(lengths.max())
        ids = self.ids[indices, :width].long()
        mask = (torch.arange(width, device=ids.device)[None, :] < lengths[:, None]).long()
        return ids, mask


def tokenize_corpus(smiles: Sequence[str], tokenizer, max_length: int, chunk: int = 100_000) -> TokenCorpus:
    """Tokenise with ``<bos> ... <eos>`` (fast tokenizer, batched) into a padded uint8/int16 matrix."""
    dtype = np.uint8 if len(tokenizer) <= 256 else np.int16
    rows: list[list[int]] = []
    for start in range(0, len(smiles), chunk):
        enc = tokenizer(list(smiles[start : start + chunk]), truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False)
        rows.extend(enc["input_ids"])
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.zeros((len(rows), int(lengths.max()) if len(rows) else 0), dtype=dtype)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return TokenCorpus(torch.from_numpy(ids), torch.from_numpy(lengths))


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator,
    mask_prob: float = MASK_PROB,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the 80/10/10 masking; returns ``(corrupted ids, labels)`` with ``-100`` where not selected."""
    pad, _unk, bos, eos, mask_id = (SPECIAL_ORDER.index(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>",
                                                                     "<mask>"))
    device = input_ids.device
    maskable = attention_mask.bool() & (input_ids != pad) & (input_ids != bos) & (input_ids != eos)
    scores = torch.rand(input_ids.shape, generator=generator, device=device)
    selected = (scores < mask_prob) & maskable
    # At least one selection per sequence: the maskable position with the smallest score.
    forced = torch.where(maskable, scores, torch.full_like(scores, 2.0)).argmin(dim=1)
    has_maskable = maskable.any(dim=1)
    rows = torch.arange(input_ids.shape[0], device=device)[has_maskable]
    selected[rows, forced[has_maskable]] = True
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    random_tokens = torch.randint(len(SPECIAL_ORDER), vocab_size, input_ids.shape, generator=generator,
                                  device=device)
    to_mask = selected & (action < REPLACE_MASK)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    use_random = selected & (action >= REPLACE_MASK) & (action < REPLACE_MASK + REPLACE_RANDOM)
    corrupted = torch.where(use_random, random_tokens, corrupted)
    return corrupted, labels


class SmilesMLMTask:
    """:class:`~models.pretrain.trainer.PretrainTask` for the SMILES transformer."""

    def __init__(self, config: MolFormerConfig, tokenizer, corpus: TokenCorpus, device: torch.device,
                 name: str = "molformer") -> None:
        self.model = MolFormerForMaskedLM(config).to(device)
        self.tokenizer = tokenizer
        self.corpus = corpus.to(device)
        self.generator = torch.Generator(device=device)
        self.name = name

    @property
    def num_examples(self) -> int:
        return len(self.corpus)

    def loss(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        ids, mask = self.corpus.batch(indices)
        corrupted, labels = mask_tokens(ids, mask, self.model.config.vocab_size, self.generator)
        out = self.model(corrupted, mask, labels=labels)
        target = labels[labels != IGNORE_INDEX]
        accuracy = (out.logits.argmax(-1) == target).float().mean()
        return {"loss": out.loss, "accuracy": accuracy}

    def export(self, directory: Path, meta: dict) -> str:
        encoder = copy.deepcopy(self.model.molformer).cpu().eval()
        return save_smiles_encoder(encoder, self.tokenizer, directory, name=self.name, extra_meta=meta)
