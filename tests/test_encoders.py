"""Both encoders with tiny random-init configs: save/load equality, attention variants, padding-invariant
pooling, determinism, the MoLFormer-XL shape, graph readout size and the pretraining heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.featurizer import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, collate_graphs, featurize_one
from models.graph_encoder import GraphEncoder, GraphEncoderConfig, GraphEncoderForPretraining
from models.smiles_encoder import (
    MolFormerConfig,
    MolFormerForMaskedLM,
    MolFormerModel,
    count_parameters,
    load_smiles_encoder,
    save_smiles_encoder,
    xl_config,
)
from models.tokenizer import build_tokenizer

MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O", "O=C(O)c1ccccc1OC(C)=O"]


@pytest.fixture(scope="module")
def tokenizer(bbbp_smiles: list[str]):
    return build_tokenizer(bbbp_smiles)


def tiny_config(vocab_size: int, attention_type: str = "linear") -> MolFormerConfig:
    return MolFormerConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, attention_type=attention_type)


def embed(model: MolFormerModel, tokenizer, smiles: list[str]) -> torch.Tensor:
    enc = tokenizer(smiles, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        return model.eval().embed(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("attention_type", ["linear", "exact"])
def test_smiles_encoder_saves_and_loads_identically(tokenizer, tmp_path: Path, attention_type: str) -> None:
    torch.manual_seed(0)
    model = MolFormerModel(tiny_config(len(tokenizer), attention_type)).eval()
    version = save_smiles_encoder(model, tokenizer, tmp_path, name="t", dtype=torch.float32)
    loaded, loaded_tok, meta = load_smiles_encoder(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and meta["version"] == version
    assert loaded.config.attention_type == attention_type
    before, after = embed(model, tokenizer, MOLECULES), embed(loaded, loaded_tok, MOLECULES)
    assert before.shape == (len(MOLECULES), 32) and torch.isfinite(before).all()
    assert torch.equal(before, after)


def test_linear_and_exact_attention_differ_but_share_weights(tokenizer) -> None:
    torch.manual_seed(0)
    linear = MolFormerModel(tiny_config(len(tokenizer), "linear")).eval()
    exact = MolFormerModel(tiny_config(len(tokenizer), "exact")).eval()
    exact.load_state_dict(linear.state_dict())
    a, b = embed(linear, tokenizer, MOLECULES), embed(exact, tokenizer, MOLECULES)
    assert a.shape == b.shape and not torch.allclose(a, b)


@pytest.mark.parametrize("attention_type", ["linear", "exact"])
def test_masked_mean_pooling_ignores_padding(tokenizer, attention_type: str) -> None:
    torch.manual_seed(0)
    model = MolFormerModel(tiny_config(len(tokenizer), attention_type)).eval()
    short = "CCO"
    alone = embed(model, tokenizer, [short])[0]
    padded = embed(model, tokenizer, [short, "CC(C)Cc1ccc(cc1)C(C)C(=O)O" * 2])[0]  # many pad tokens
    torch.testing.assert_close(alone, padded, rtol=1e-5, atol=1e-5)


def test_pool_is_the_mean_over_real_tokens() -> None:
    hidden = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert MolFormerModel.pool(hidden, mask).tolist() == [[1.5, 2.5, 3.5]]


def test_inference_is_deterministic(tokenizer) -> None:
    torch.manual_seed(0)
    model = MolFormerModel(tiny_config(len(tokenizer))).eval()
    first = embed(model, tokenizer, MOLECULES)
    assert torch.equal(first, embed(model, tokenizer, MOLECULES))
    model.train()  # dropout active: training mode is not deterministic, eval mode is
    enc = tokenizer(MOLECULES, padding=True, return_tensors="pt", return_token_type_ids=False)
    assert not torch.equal(model.embed(enc["input_ids"], enc["attention_mask"]).detach(), first)


def test_default_and_xl_shapes(tokenizer) -> None:
    default = count_parameters(MolFormerModel(MolFormerConfig(vocab_size=len(tokenizer))))
    assert 3_000_000 <= default <= 8_000_000  # "about 5M"
    xl = xl_config(len(tokenizer))
    assert (xl.num_hidden_layers, xl.hidden_size, xl.num_attention_heads) == (12, 768, 12)
    with torch.device("meta"):  # shapes only: no memory, no compute
        n_xl = count_parameters(MolFormerModel(xl))
    assert 80_000_000 <= n_xl <= 90_000_000  # 12 x (4 * 768^2 + 2 * 768 * 3072) + biases/norms/embeddings


def test_masked_lm_head_forward_and_loss(tokenizer) -> None:
    torch.manual_seed(0)
    model = MolFormerForMaskedLM(tiny_config(len(tokenizer)))
    enc = tokenizer(MOLECULES, padding=True, return_tensors="pt", return_token_type_ids=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    logits = model(ids, mask).logits
    assert logits.shape == (*ids.shape, len(tokenizer))
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    masked = ids.clone()
    masked[:, 1] = tokenizer.mask_token_id
    out = model(masked, mask, labels=labels)
    assert out.logits.shape == (len(MOLECULES), len(tokenizer)) and out.loss.ndim == 0
    out.loss.backward()
    assert model.lm_decoder.weight.grad is not None and model.molformer.embeddings.weight.grad is not None


def graph_batch(smiles: list[str]):
    return collate_graphs([featurize_one(s).graph for s in smiles])


def test_graph_readout_is_layers_plus_one_times_hidden(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GraphEncoderConfig(hidden_size=16, num_layers=3)
    model = GraphEncoder(config).eval()
    with torch.no_grad():
        out = model.embed(graph_batch(MOLECULES))
    assert out.shape == (len(MOLECULES), (3 + 1) * 16) == (len(MOLECULES), config.embedding_size)
    # the first block is the sum of the input-layer atom embeddings
    single = graph_batch(["CCO"])
    with torch.no_grad():
        first = model.atom_embedding(single.x).sum(0)
    torch.testing.assert_close(out[0, :16], first)


def test_graph_encoder_saves_loads_and_is_order_independent(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GraphEncoder(GraphEncoderConfig(hidden_size=16, num_layers=2)).eval()
    version = model.save(tmp_path, name="g", dtype=torch.float32)
    loaded = GraphEncoder.load(tmp_path)
    assert version.startswith("g-") and (tmp_path / "model.safetensors").exists()
    with torch.no_grad():
        a = model.embed(graph_batch(MOLECULES))
        b = loaded.embed(graph_batch(MOLECULES))
        alone = loaded.embed(graph_batch([MOLECULES[3]]))
    assert torch.equal(a, b)
    torch.testing.assert_close(alone[0], b[3], rtol=1e-5, atol=1e-5)  # batching does not leak


def test_graph_pretraining_heads_forward_backward() -> None:
    torch.manual_seed(0)
    config = GraphEncoderConfig(hidden_size=16, num_layers=2)
    model = GraphEncoderForPretraining(config)
    batch = graph_batch(MOLECULES)
    atom_mask = torch.zeros(batch.x.shape[0], dtype=torch.bool)
    atom_mask[::3] = True
    x = batch.x.clone()
    x[atom_mask] = torch.tensor(ATOM_FEATURE_DIMS)  # the [MASK] index of every column
    src, dst = batch.edge_index
    bond_mask = atom_mask[src] | atom_mask[dst]
    edge_attr = batch.edge_attr.clone()
    edge_attr[bond_mask] = torch.tensor(BOND_FEATURE_DIMS)
    out = model(x, batch.edge_index, edge_attr, atom_mask, bond_mask, batch.x, batch.edge_attr)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0.0 <= float(out["atom_acc"]) <= 1.0 and 0.0 <= float(out["bond_acc"]) <= 1.0
    out["loss"].backward()
    assert model.atom_heads[0].weight.grad is not None and model.bond_heads[0].weight.grad is not None
