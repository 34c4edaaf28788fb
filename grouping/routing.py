"""Learned grouping of auxiliary data sets by meta-gradient routing (after MolGroup).

Reference: T. Ji, Y. Guo, et al., "Learning to Group Auxiliary Datasets for Molecule", NeurIPS 2023
(MolGroup). The idea is theirs; this is our implementation on molfusion's fused embeddings.

Model (``d`` = data set, ``t`` = the target, ``a`` = an auxiliary set; ``x`` = a molecule's fused
embedding projected on its leading principal components, :class:`Projection`):

- Backbone: a shared trunk ``f_s`` (the target's parameters ``θ_s``), one private trunk ``f_a`` per
  auxiliary set and one linear head per set. An auxiliary batch is routed as
  ``z = g_a · f_s(x) + (1 − g_a) · f_a(x)``, so the gate ``g_a`` decides how much that set trains the
  target's parameters versus its own.
- Routing parameters ``φ``:
  task affinity ``τ_a = cos(e_t, e_a)`` with a learned task embedding ``e_d`` per set;
  structure affinity ``σ_a = cos(s̃_t, s̃_a)`` where ``s_d = Σ_i α_i h_i`` is a gated-attention pooling
  (Ilse et al., 2018) of per-molecule encodings ``h_i = MLP([fused_i, ECFP_i])`` over a batch of the set,
  and ``s̃_d = s_d − mean_d' s_d'`` is centred over the sets in play;
  mixed affinity ``m_a = λ τ_a + (1 − λ) σ_a`` with ``λ = sigmoid(β)`` learned;
  gate ``g_a = sigmoid((m_a + κ p_a) / T)``, where ``p_a`` is an optional fixed structure prior: the
  candidate's nearest-neighbour ECFP4 Tanimoto similarity to the target, standardised over the
  candidates (:func:`grouping.similarity.similarity_prior`), weighted by ``κ = structure_prior``
  (0 = off, the default). The learned affinities then correct the prior instead of starting from
  nothing.
- Bi-level step: virtual SGD step ``θ_s' = θ_s − η ∇_{θ_s}(L_t + Σ_a L_a(g))`` (graph kept), then the
  target loss on held-out target rows at ``θ_s'`` is differentiated w.r.t. ``φ`` (meta-gradient through
  ``g``; ``torch.func.functional_call``). The backbone then takes an ordinary step on
  ``L_t + Σ_a L_a(g.detach())``.
- Balanced sampling (one equal-size batch from every set per step), warm-up epochs with ``g ≡ 1`` and no
  routing update, and iterative pruning: after each round the lowest-scoring fraction of the remaining
  candidates is dropped. Final group: remaining candidates with gate ``≥ select_threshold``, best first,
  at most ``max_group``.
- Repeats: one routing run's group hangs on noise (a 10⁻³ relative change of the features changed it
  in 3 of 3 seeds, docs/bench_grouping.md). With ``repeats = R > 1`` the routing runs with seeds
  ``seed … seed + R − 1`` and every candidate's affinities and gate are averaged over the runs (a
  candidate pruned in a run counts with its gate when it was pruned); the group is then chosen from the
  mean gates by the same rule. ``votes`` is the fraction of runs whose own group had the candidate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from grouping.features import SetFeatures
from grouping.similarity import nearest_neighbour_tanimoto, similarity_prior

log = logging.getLogger(__name__)


@dataclass
class MolGroupConfig:
    """Hyper-parameters of the routing (defaults sized for a CPU minute on ~18 candidates)."""

    components: int = 128
    hidden: int = 128
    task_dim: int = 32
    set_dim: int = 64
    batch_size: int = 64
    steps_per_epoch: int = 25
    epochs_per_round: int = 2
    warmup_epochs: int = 1
    rounds: int = 3
    prune_fraction: float = 0.34
    temperature: float = 0.25
    lr: float = 1e-3
    meta_lr: float = 1e-2
    virtual_lr: float = 0.1
    meta_fraction: float = 0.2
    select_threshold: float = 0.5
    max_group: int = 3
    score_sample: int = 512
    seed: int = 0
    repeats: int = 1
    structure_prior: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CandidateScore:
    dataset: str
    task_affinity: float
    structure_affinity: float
    score: float
    selected: bool
    pruned_in_round: int | None
    votes: float = 0.0


def _mlp(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.ReLU()
    )


class SetEncoder(nn.Module):
    """Gated-attention pooling of a set: ``s = Σ_i softmax_i(w·(tanh(V h_i) ⊙ σ(U h_i))) h_i``.

    Input ``[..., n, d_in]`` (one set, or a stack of equal-size sets), output ``[..., dim]``.
    """

    def __init__(self, d_in: int, dim: int) -> None:
        super().__init__()
        self.mol = nn.Sequential(nn.Linear(d_in, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.v = nn.Linear(dim, dim)
        self.u = nn.Linear(dim, dim)
        self.w = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mol(x)
        att = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)
        return (torch.softmax(att, dim=-1).unsqueeze(-1) * h).sum(-2)


class Router(nn.Module):
    """Routing parameters φ: task embeddings, the set encoder and the mixing logit β."""

    def __init__(self, n_sets: int, d_struct: int, cfg: MolGroupConfig) -> None:
        super().__init__()
        self.task = nn.Parameter(torch.randn(n_sets, cfg.task_dim) * 0.1)
        self.sets = SetEncoder(d_struct, cfg.set_dim)
        self.beta = nn.Parameter(torch.zeros(()))
        self.temperature = cfg.temperature

    def affinities(
        self, set_inputs: list[torch.Tensor], prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(task affinity, structure affinity, gate) of every auxiliary set to the target (set 0).

        ``set_inputs[d]`` is a batch of set ``d``'s molecules; all sets are pooled so that the centring
        of the set representations does not depend on which candidates are still in play. ``prior``
        (one value per auxiliary set, already weighted) is added to the mixed affinity.
        """
        if len({len(x) for x in set_inputs}) == 1:  # equal batches: one pass over the stack
            reps = self.sets(torch.stack(set_inputs))
        else:
            reps = torch.stack([self.sets(x) for x in set_inputs])
        reps = reps - reps.mean(0, keepdim=True)
        struct = F.cosine_similarity(reps[:1], reps[1:], dim=-1)
        task = F.cosine_similarity(self.task[:1], self.task[1:], dim=-1)
        lam = torch.sigmoid(self.beta)
        mixed = lam * task + (1 - lam) * struct
        if prior is not None:
            mixed = mixed + prior
        gate = torch.sigmoid(mixed / self.temperature)
        return task, struct, gate


def _batched_linear(n: int, d_in: int, d_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weights ``[n, d_in, d_out]`` and biases ``[n, 1, d_out]`` of ``n`` linear maps, each initialised
    like :class:`torch.nn.Linear` (uniform in ``±1/√d_in``)."""
    bound = 1.0 / math.sqrt(d_in)
    weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound))
    return weight, bias


class BatchedLinear(nn.Module):
    """``n`` independent linear maps; ``forward(x [k, b, d_in], sets [k])`` applies map ``sets[j]`` to
    ``x[j]`` in one batched matrix product."""

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight, self.bias = _batched_linear(n, d_in, d_out)

    def forward(self, x: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias[sets], x, self.weight[sets])


class BatchedMLP(nn.Module):
    """``n`` independent copies of the 2-layer trunk of :func:`_mlp`, applied like :class:`BatchedLinear`."""

    def __init__(self, n: int, d_in: int, hidden: int) -> None:
        super().__init__()
        self.first = BatchedLinear(n, d_in, hidden)
        self.second = BatchedLinear(n, hidden, hidden)

    def forward(self, x: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        h = F.dropout(torch.relu(self.first(x, sets)), 0.1, self.training)
        return torch.relu(self.second(h, sets))


class Backbone(nn.Module):
    """Shared trunk + target head (θ_s) and per-auxiliary private trunks and heads.

    The auxiliary sets' private trunks are batched (one matrix product per layer for all sets); their
    heads stay separate, since one set (ToxCast, 617 tasks) is far wider than the rest.
    """

    def __init__(self, d_in: int, target_tasks: int, aux_tasks: list[int], hidden: int) -> None:
        super().__init__()
        self.shared = _mlp(d_in, hidden)
        self.target_head = nn.Linear(hidden, target_tasks)
        self.private = BatchedMLP(len(aux_tasks), d_in, hidden)
        self.heads = nn.ModuleList([nn.Linear(hidden, t) for t in aux_tasks])


def masked_loss(pred: torch.Tensor, y: torch.Tensor, classification: torch.Tensor) -> torch.Tensor:
    """Mean over observed labels of BCE-with-logits (classification) or MSE (standardised regression)."""
    mask = ~torch.isnan(y)
    if not mask.any():
        return pred.sum() * 0.0
    target = torch.nan_to_num(y)
    bce = F.binary_cross_entropy_with_logits(pred, target.clamp(0, 1), reduction="none")
    mse = (pred - target) ** 2
    loss = torch.where(classification.expand_as(pred), bce, mse)
    return (loss * mask).sum() / mask.sum()


def _standardise_labels(labels: np.ndarray, task_types: list[str]) -> np.ndarray:
    y = labels.astype(np.float32).copy()
    for j, t in enumerate(task_types):
        if t == "regression":
            col = y[:, j]
            mu, sd = np.nanmean(col), np.nanstd(col)
            y[:, j] = (col - mu) / (sd if sd > 1e-8 else 1.0)
    return y


class Projection:
    """Standardise the fused embedding, project it on its top principal components, standardise again.

    Fitted on a deterministic subsample (at most 3,000) of all rows in play:
    ``z = ((x − μ)/σ) V_k / s_k`` where ``V_k`` are the leading right singular vectors and ``s_k`` the
    component scales. Keeps the routing
    nets small (``k = MolGroupConfig.components``) whatever the encoders' width.
    """

    def __init__(self, sets: list[np.ndarray], k: int, seed: int, max_rows: int = 3000) -> None:
        allx = np.concatenate(sets).astype(np.float32)
        self.mu, self.sd = allx.mean(0), allx.std(0) + 1e-6
        z = (allx - self.mu) / self.sd
        if len(z) > max_rows:
            z = z[np.random.default_rng(seed).choice(len(z), max_rows, replace=False)]
        k = min(k, z.shape[1], len(z))
        torch.manual_seed(seed)  # randomized SVD (Halko et al., 2011), torch's thread settings apply
        _, _, v = torch.svd_lowrank(torch.from_numpy(z), q=min(k + 10, *z.shape), niter=2)
        self.v = v[:, :k].numpy()
        self.scale = (z @ self.v).std(0) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (((x - self.mu) / self.sd) @ self.v / self.scale).astype(np.float32)


class _SetTensors:
    def __init__(self, feats: SetFeatures, projection: Projection) -> None:
        self.x = torch.from_numpy(np.nan_to_num(projection(feats.fused)))
        self.struct = torch.cat([self.x, torch.from_numpy(feats.fingerprints.astype(np.float32))], dim=1)
        self.y = torch.from_numpy(_standardise_labels(feats.labels, feats.task_types))
        self.cls = torch.tensor([t == "classification" for t in feats.task_types])
        self.n = len(feats)

    def batch(self, rng: np.random.Generator, size: int, rows: np.ndarray | None = None) -> np.ndarray:
        pool = np.arange(self.n) if rows is None else rows
        return rng.choice(pool, size=size, replace=len(pool) < size)


@dataclass
class _AuxBatch:
    """One step's batches of the alive auxiliary sets: the sets' indices, features stacked ``[k, b, d]``,
    and per set its labels ``[b, t]`` and task kinds ``[t]``."""

    sets: list[int]
    x: torch.Tensor
    y: list[torch.Tensor]
    cls: list[torch.Tensor]

    @classmethod
    def stack(cls, aux: list[_SetTensors], alive: list[int], rows: list[np.ndarray]) -> _AuxBatch:
        return cls(
            list(alive),
            torch.stack([aux[k].x[i] for k, i in zip(alive, rows, strict=True)]),
            [aux[k].y[i] for k, i in zip(alive, rows, strict=True)],
            [aux[k].cls for k in alive],
        )


def route(
    target: SetFeatures,
    candidates: dict[str, SetFeatures],
    cfg: MolGroupConfig,
    progress: Callable[[float, str], None] | None = None,
    similarity: dict[str, float] | None = None,
) -> list[CandidateScore]:
    """Score every candidate auxiliary set for ``target`` (training rows only); see the module docstring.

    ``progress(fraction, message)`` is called after every epoch; it may raise to abort. ``similarity``
    (each candidate's :func:`~grouping.similarity.nearest_neighbour_tanimoto` to ``target``, when the
    caller has it) spares recomputing it for the structure prior.
    """
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {cfg.repeats}")
    prior = None  # seed-independent: computed once for all runs
    if cfg.structure_prior and candidates:
        if similarity is None:
            similarity = {
                n: nearest_neighbour_tanimoto(target.fingerprints, c.fingerprints)
                for n, c in candidates.items()
            }
        z = similarity_prior([similarity[n] for n in candidates])
        prior = cfg.structure_prior * torch.from_numpy(z)
    runs = []
    for r in range(cfg.repeats):

        def report(fraction: float, message: str, r: int = r) -> None:
            if progress is not None:
                prefix = f"routing run {r + 1}/{cfg.repeats}, " if cfg.repeats > 1 else ""
                progress((r + fraction) / cfg.repeats, prefix + message)

        runs.append(_route_once(target, candidates, replace(cfg, seed=cfg.seed + r), prior, report))
    return runs[0] if len(runs) == 1 else combine_runs(runs, cfg)


def combine_runs(runs: list[list[CandidateScore]], cfg: MolGroupConfig) -> list[CandidateScore]:
    """One score per candidate from several routing runs: mean affinities and gate, the fraction of runs
    that selected it (``votes``), the round most runs pruned it in (``None`` = most kept it), and the
    group chosen from the mean gates by the single run's rule (gate ``≥ select_threshold``, best first,
    at most ``max_group``)."""
    names = [s.dataset for s in runs[0]]
    by_name = [{s.dataset: s for s in run} for run in runs]
    if any(set(b) != set(names) for b in by_name):
        raise ValueError("routing runs scored different candidates")
    merged = []
    for n in names:
        scores = [b[n] for b in by_name]
        pruned = [s.pruned_in_round for s in scores]
        mode = max(set(pruned), key=lambda p: (pruned.count(p), p is None, p or 0))
        merged.append(
            CandidateScore(
                n,
                float(np.mean([s.task_affinity for s in scores])),
                float(np.mean([s.structure_affinity for s in scores])),
                float(np.mean([s.score for s in scores])),
                False,
                mode,
                float(np.mean([s.selected for s in scores])),
            )
        )
    chosen = select_group({s.dataset: s.score for s in merged}, cfg)
    for s in merged:
        s.selected = s.dataset in chosen
    return merged


def select_group(gates: dict, cfg: MolGroupConfig) -> set:
    """The group rule: the candidates with the highest gates, at most ``max_group``, each with gate
    ``≥ select_threshold`` (the keys of ``gates``)."""
    best = sorted(gates, key=lambda k: -gates[k])[: cfg.max_group]
    return {k for k in best if gates[k] >= cfg.select_threshold}


def _route_once(
    target: SetFeatures,
    candidates: dict[str, SetFeatures],
    cfg: MolGroupConfig,
    prior: torch.Tensor | None,
    progress: Callable[[float, str], None] | None,
) -> list[CandidateScore]:
    """One routing run with seed ``cfg.seed`` (:func:`route` with ``repeats = 1``); ``prior`` = the
    weighted structure prior per candidate (``None`` = off)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    names = list(candidates)
    if not names:
        return []
    projection = Projection([target.fused] + [candidates[n].fused for n in names], cfg.components, cfg.seed)
    tgt = _SetTensors(target, projection)
    aux = [_SetTensors(candidates[n], projection) for n in names]
    perm = rng.permutation(tgt.n)
    n_meta = max(1, int(round(cfg.meta_fraction * tgt.n)))
    meta_rows, train_rows = perm[:n_meta], perm[n_meta:] if tgt.n - n_meta > 0 else perm

    backbone = Backbone(tgt.x.shape[1], tgt.y.shape[1], [a.y.shape[1] for a in aux], cfg.hidden)
    router = Router(1 + len(aux), tgt.struct.shape[1], cfg)
    opt = torch.optim.Adam(backbone.parameters(), lr=cfg.lr)
    meta_opt = torch.optim.Adam(router.parameters(), lr=cfg.meta_lr)

    alive = list(range(len(aux)))
    pruned_round: dict[int, int] = {}
    last: dict[int, tuple[float, float, float]] = {}
    total_epochs = cfg.rounds * cfg.epochs_per_round
    epoch_no = 0
    for rnd in range(cfg.rounds):
        for ep in range(cfg.epochs_per_round):
            warm = rnd == 0 and ep < cfg.warmup_epochs
            backbone.train()
            for _ in range(cfg.steps_per_epoch):
                t_idx = tgt.batch(rng, cfg.batch_size, train_rows)
                batch = _AuxBatch.stack(aux, alive, [aux[k].batch(rng, cfg.batch_size) for k in alive])
                if warm:
                    gate = torch.ones(len(alive))
                else:
                    struct_in = [tgt.struct[tgt.batch(rng, cfg.batch_size, train_rows)]]
                    struct_in += [a.struct[a.batch(rng, cfg.batch_size)] for a in aux]
                    gate = router.affinities(struct_in, prior)[2][alive]
                    _meta_step(
                        backbone,
                        router,
                        meta_opt,
                        tgt,
                        batch,
                        t_idx,
                        gate,
                        tgt.batch(rng, cfg.batch_size, meta_rows),
                        cfg.virtual_lr,
                    )
                    gate = gate.detach()
                opt.zero_grad()
                loss = _joint_loss(backbone, tgt, batch, t_idx, gate, None)
                loss.backward()
                opt.step()
            epoch_no += 1
            if progress is not None:
                progress(epoch_no / total_epochs, f"round {rnd + 1}/{cfg.rounds}, epoch {ep + 1}")
        scores = _score(router, tgt, aux, alive, cfg, rng, prior)
        last.update(scores)
        log.info(
            "routing round",
            extra={"round": rnd + 1, "scores": {names[k]: round(v[2], 4) for k, v in scores.items()}},
        )
        if rnd < cfg.rounds - 1 and len(alive) > 1:
            order = sorted(alive, key=lambda k: scores[k][2])
            n_drop = min(len(alive) - 1, int(math.floor(cfg.prune_fraction * len(alive))))
            for k in order[:n_drop]:
                pruned_round[k] = rnd + 1
            alive = [k for k in alive if k not in set(order[:n_drop])]
    chosen = select_group({k: last[k][2] for k in alive}, cfg)
    return [
        CandidateScore(
            names[k], last[k][0], last[k][1], last[k][2], k in chosen, pruned_round.get(k), float(k in chosen)
        )
        for k in range(len(aux))
    ]


def _joint_loss(
    backbone: Backbone,
    tgt: _SetTensors,
    batch: _AuxBatch,
    t_idx: np.ndarray,
    gate: torch.Tensor,
    shared_params: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    """``L_t + mean_a L_a`` with aux batches routed through ``g_a f_s + (1 − g_a) f_a``."""

    def shared(x: torch.Tensor) -> torch.Tensor:
        return backbone.shared(x) if shared_params is None else _shared_call(backbone, shared_params, x)

    loss = masked_loss(backbone.target_head(shared(tgt.x[t_idx])), tgt.y[t_idx], tgt.cls)
    k, b, d = batch.x.shape
    if k == 0:
        return loss
    g = gate.view(k, 1, 1)
    sets = torch.tensor(batch.sets, dtype=torch.long)
    z = g * shared(batch.x.reshape(k * b, d)).view(k, b, -1) + (1 - g) * backbone.private(batch.x, sets)
    for j, (s, y, c) in enumerate(zip(batch.sets, batch.y, batch.cls, strict=True)):
        loss = loss + masked_loss(backbone.heads[s](z[j]), y, c) / k
    return loss


def _shared_call(backbone: Backbone, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The shared trunk at (virtual) parameters ``params`` (names relative to ``backbone.shared``)."""
    return functional_call(backbone.shared, params, (x,))


def _meta_step(
    backbone: Backbone,
    router: Router,
    meta_opt: torch.optim.Optimizer,
    tgt: _SetTensors,
    batch: _AuxBatch,
    t_idx: np.ndarray,
    gate: torch.Tensor,
    meta_idx: np.ndarray,
    virtual_lr: float,
) -> None:
    """One meta-gradient update of the routing parameters through a virtual step of the shared trunk."""
    params = dict(backbone.shared.named_parameters())
    inner = _joint_loss(backbone, tgt, batch, t_idx, gate, params)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
    virtual = {
        n: p - virtual_lr * g if g is not None else p
        for (n, p), g in zip(params.items(), grads, strict=True)
    }
    meta_loss = masked_loss(
        backbone.target_head(_shared_call(backbone, virtual, tgt.x[meta_idx])), tgt.y[meta_idx], tgt.cls
    )
    meta_opt.zero_grad()
    meta_loss.backward(inputs=list(router.parameters()))
    meta_opt.step()


@torch.no_grad()
def _score(
    router: Router,
    tgt: _SetTensors,
    aux: list[_SetTensors],
    alive: list[int],
    cfg: MolGroupConfig,
    rng: np.random.Generator,
    prior: torch.Tensor | None,
) -> dict[int, tuple[float, float, float]]:
    """Affinities of the alive candidates, the set representations pooled over ``score_sample`` rows each."""

    def sample(s: _SetTensors) -> torch.Tensor:
        idx = rng.choice(s.n, size=min(s.n, cfg.score_sample), replace=False)
        return s.struct[idx]

    task, struct, gate = router.affinities([sample(tgt)] + [sample(a) for a in aux], prior)
    return {k: (float(task[k]), float(struct[k]), float(gate[k])) for k in alive}
