"""MoLFormer-style SMILES transformer as a Hugging Face ``PreTrainedModel``.

Architecture (after Ross et al., 2022, "Large-scale chemical language representations capture
molecular structure and properties"): token embeddings, pre-LayerNorm transformer blocks with rotary
position embeddings applied to queries and keys, and *linear* attention

    Attn(Q, K, V)_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps)

with the deterministic feature map ``phi(x) = elu(x) + 1`` (Katharopoulos et al., 2020). MoLFormer
itself uses random Fourier features (FAVOR+); we choose the elu map because it has no random
projection to redraw, so the same SMILES always gives the same vector, and it costs O(L d^2).
Exact softmax attention is available with ``attention_type="exact"``. The molecule embedding is the
masked mean of the last hidden states over non-padding tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput

from models.checkpoint import read_meta, weights_digest, write_meta
from models.library_logs import route_library_logs

route_library_logs()  # transformers just gave its logger a console handler of its own
_TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


class MolFormerConfig(PretrainedConfig):
    model_type = "molfusion-molformer"

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 256,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 8,
        intermediate_size: int = 1024,
        max_position_embeddings: int = 512,
        attention_type: str = "linear",
        rotary_base: float = 10000.0,
        hidden_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        if attention_type not in ("linear", "exact"):
            raise ValueError(f"attention_type must be 'linear' or 'exact', got {attention_type!r}")
        if hidden_size % num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.attention_type = attention_type
        self.rotary_base = rotary_base
        self.hidden_dropout_prob = hidden_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., 2021): rotate (q, k) channel pairs by position * theta_i,
    ``theta_i = base^(-2i/d)``.

    The frequencies are derived from the config, not stored: a non-persistent buffer is left
    uninitialised by ``from_pretrained`` under transformers 5 (weights are materialised from the
    checkpoint only), which silently destroyed the position signal of loaded models.
    """

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self._cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, seq_len: int, device: torch.device, dtype: torch.dtype):
        key = (seq_len, device, dtype)
        if key not in self._cache:
            steps = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32)
            inv_freq = 1.0 / (self.base ** (steps / self.head_dim))
            freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = (emb.cos().to(dtype), emb.sin().to(dtype))
        return self._cache[key]

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._cos_sin(q.shape[-2], q.device, q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class MolFormerAttention(nn.Module):
    def __init__(self, config: MolFormerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention_type = config.attention_type
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.rotary = RotaryEmbedding(self.head_dim, config.rotary_base)
        self.dropout = config.hidden_dropout_prob

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, _ = hidden.shape
        qkv = self.qkv(hidden).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, L, d]
        q, k = self.rotary(q, k)
        if self.attention_type == "exact":
            attn_mask = mask[:, None, None, :].bool()
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            ctx = self._linear_attention(q, k, v, mask)
        return self.out(ctx.transpose(1, 2).reshape(b, length, -1))

    @staticmethod
    def _linear_attention(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        dtype = q.dtype
        # Sums over the sequence run in float32: bf16 accumulation over long inputs loses precision.
        phi_q = F.elu(q.float()) + 1.0
        phi_k = (F.elu(k.float()) + 1.0) * mask[:, None, :, None].float()
        kv = torch.einsum("bhld,bhle->bhde", phi_k, v.float())
        z = 1.0 / (torch.einsum("bhld,bhd->bhl", phi_q, phi_k.sum(dim=2)) + 1e-6)
        return (torch.einsum("bhld,bhde->bhle", phi_q, kv) * z[..., None]).to(dtype)


class MolFormerLayer(nn.Module):
    def __init__(self, config: MolFormerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MolFormerAttention(config)
        self.ln2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.drop(self.attn(self.ln1(hidden), mask))
        return hidden + self.drop(self.ffn(self.ln2(hidden)))


class MolFormerPreTrainedModel(PreTrainedModel):
    config_class = MolFormerConfig
    base_model_prefix = "molformer"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MolFormerModel(MolFormerPreTrainedModel):
    """Encoder body: ``forward`` returns token states; :meth:`pool` gives one vector per molecule."""

    def __init__(self, config: MolFormerConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(MolFormerLayer(config) for _ in range(config.num_hidden_layers))
        self.final_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object
    ) -> BaseModelOutput:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden = self.drop(self.embeddings(input_ids))
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return BaseModelOutput(last_hidden_state=self.final_ln(hidden))

    @staticmethod
    def pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean over non-padding tokens, computed in float32."""
        mask = attention_mask.unsqueeze(-1).float()
        return (last_hidden_state.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self(input_ids, attention_mask).last_hidden_state, attention_mask)


class MolFormerForMaskedLM(MolFormerPreTrainedModel):
    """Encoder plus a masked-language-modelling head (untied decoder: the vocabulary is tiny)."""

    def __init__(self, config: MolFormerConfig) -> None:
        super().__init__(config)
        self.molformer = MolFormerModel(config)
        self.lm_transform = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.GELU(),
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
        )
        self.lm_decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: object,
    ) -> MaskedLMOutput:
        hidden = self.molformer(input_ids, attention_mask).last_hidden_state
        if labels is not None:
            # Decode only the masked positions: ~15% of tokens, so the vocab projection stays cheap.
            selected = labels != -100
            logits = self.lm_decoder(self.lm_transform(hidden[selected]))
            loss = F.cross_entropy(logits.float(), labels[selected])
            return MaskedLMOutput(loss=loss, logits=logits)
        return MaskedLMOutput(logits=self.lm_decoder(self.lm_transform(hidden)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def xl_config(vocab_size: int) -> MolFormerConfig:
    """The MoLFormer-XL shape: 12 layers, 768 hidden, 12 heads."""
    return MolFormerConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )


def save_smiles_encoder(
    model: MolFormerModel,
    tokenizer,
    directory: str | Path,
    name: str = "molformer",
    extra_meta: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> str:
    """Write config + safetensors weights (``dtype``) + tokenizer + version into one folder."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(str(out), safe_serialization=True)
    model.float()
    tokenizer.save_pretrained(str(out))
    version = f"{name}-{weights_digest(model.state_dict())}"
    write_meta(out, name=name, kind="smiles", version=version, extra=extra_meta)
    return version


def load_smiles_encoder(directory: str | Path):
    """Load ``(MolFormerModel, tokenizer, meta)`` from a folder written by :func:`save_smiles_encoder`."""
    from models.tokenizer import load_tokenizer

    src = Path(directory)
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in services/CLIs
    model = (
        MolFormerModel.from_pretrained(str(src), dtype=torch.float32)
        if _TRANSFORMERS_5
        else MolFormerModel.from_pretrained(str(src), torch_dtype=torch.float32)
    )
    return model.eval(), load_tokenizer(src), read_meta(src)
