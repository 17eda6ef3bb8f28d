"""Split residual vector quantizer with EMA codebooks, k-means initialisation and dead-code replacement.

Mimi's quantizer: the latent is projected (1x1 conv) into two RVQs that both see the *same* latent: `rvq_first`
holds the semantic codebook(s), distilled towards a teacher (here: phone identity), and `rvq_rest` the acoustic
residual stack. Their decoded outputs are summed. Codebooks are not trained by gradient: each keeps an EMA of the
number of vectors assigned to each entry (`cluster_usage`) and of their sum (`embedding_sum`); the entry is
their ratio. The first training batch initialises a codebook by k-means; entries used less than a fraction of
the uniform usage are replaced by random vectors of the batch. In training, a random half of the samples skip
quantization (the decoder also learns from the continuous latent), and a straight-through estimator passes the
gradient of the decoder to the encoder.

Dimension legend: B batch, C latent channels, D codebook dim, T frames, K codebooks, N = B*T vectors, V entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import QuantizerConfig


def _sample_vectors(samples: Tensor, num: int) -> Tensor:
    """`num` rows of `samples` [N, D] (without replacement when there are enough)."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def kmeans(samples: Tensor, num_clusters: int, num_iters: int) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on [N, D]; empty clusters are re-seeded from the samples. Returns (means [V, D], counts [V])."""
    means = _sample_vectors(samples, num_clusters)
    counts = torch.zeros(num_clusters, device=samples.device)
    for _ in range(num_iters):
        assign = torch.cdist(samples, means).argmin(dim=-1)  # [N]
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new = sums / counts.clamp(min=1)[:, None]
        means = torch.where((counts == 0)[:, None], _sample_vectors(samples, num_clusters), new)
    return means, counts


class EuclideanCodebook(nn.Module):
    """One codebook of `bins` vectors of size `dim`, learnt by EMA (no gradient)."""

    def __init__(self, dim: int, cfg: QuantizerConfig, epsilon: float = 1e-5):
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        self.epsilon = epsilon
        self.register_buffer("initialized", torch.zeros(1))
        self.register_buffer("cluster_usage", torch.ones(cfg.bins))
        self.register_buffer("embedding_sum", torch.zeros(cfg.bins, dim))
        # persistent so that a resumed run checks for dead codes at the same steps as an uninterrupted one
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def embedding(self) -> Tensor:  # [V, D]
        return self.embedding_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]

    def _table(self) -> tuple[Tensor, Tensor]:
        """(embedding [V, D], squared norms [V]), recomputed only when the buffers change (EMA update, load,
        device move): streaming encode/decode call this for every frame and codebook."""
        try:
            key = (self.embedding_sum.data_ptr(), self.embedding_sum._version, self.cluster_usage.data_ptr(),
                   self.cluster_usage._version)
        except RuntimeError:  # inference tensors carry no version counter: no cache
            key = None
        cache = getattr(self, "_cache", None)
        if cache is None or key is None or cache[0] != key or torch.is_grad_enabled():
            e = self.embedding
            cache = (key, e, (e * e).sum(-1))
            if not torch.is_grad_enabled():
                self._cache = cache
        return cache[1], cache[2]

    def encode(self, x: Tensor) -> Tensor:  # [N, D] -> [N]
        # argmin_v |x - e_v|^2 = argmin_v (|e_v|^2 - 2 x.e_v): one product, the same for any number of rows
        e, e2 = self._table()
        with torch.autocast(x.device.type, enabled=False):  # distances in fp32 even under bf16 autocast
            return torch.addmm(e2, x.float(), e.t(), alpha=-2.0).argmin(dim=-1)

    def decode(self, codes: Tensor) -> Tensor:  # [...] -> [..., D]
        return F.embedding(codes, self._table()[0])

    @torch.no_grad()
    def update(self, x: Tensor, codes: Tensor) -> float:
        """EMA update from vectors x [N, D] assigned to `codes` [N]; returns the fraction of entries replaced."""
        decay, bins = self.cfg.decay, self.cfg.bins
        usage = torch.bincount(codes, minlength=bins).to(x.dtype)
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, codes, x)
        self.cluster_usage.mul_(decay).add_(usage, alpha=1 - decay)
        self.embedding_sum.mul_(decay).add_(sums, alpha=1 - decay)
        self.updates += 1
        if int(self.updates) % self.cfg.check_unused_every:
            return 0.0
        uniform = self.cluster_usage.sum() / bins
        dead = self.cluster_usage < self.cfg.threshold_usage_ratio * uniform  # [V]
        if dead.any():
            replaced_usage = self.cfg.replaced_usage_ratio * uniform
            new = _sample_vectors(x, bins)
            self.embedding_sum.copy_(torch.where(dead[:, None], replaced_usage * new, self.embedding_sum))
            self.cluster_usage.copy_(torch.where(dead, replaced_usage, self.cluster_usage))
        return float(dead.float().mean())

    @torch.no_grad()
    def init_kmeans(self, x: Tensor) -> None:
        means, counts = kmeans(x, self.cfg.bins, self.cfg.kmeans_iters)
        counts = counts.clamp(min=1)
        self.embedding_sum.copy_(means * counts[:, None])
        self.cluster_usage.copy_(counts)
        self.initialized.fill_(1)


@dataclass
class RVQResult:
    quantized: Tensor  # [B, C, T] output-projected sum of the codebook vectors (straight-through in training)
    codes: Tensor  # [B, K, T]
    commitment: Tensor  # scalar, mean over codebooks of ||residual - sg(codebook vector)||^2
    replaced: float  # mean fraction of dead entries replaced this step (training)
    entropy: float  # mean codebook usage entropy / log(bins), 1 = uniform usage


class ResidualVQ(nn.Module):
    """Latent [B, C, T] -> 1x1 projection -> residual VQ over `num_codebooks` of `max_codebooks` layers."""

    def __init__(self, in_dim: int, cfg: QuantizerConfig, max_codebooks: int, num_codebooks: int):
        super().__init__()
        self.cfg = cfg
        self.num_codebooks = num_codebooks
        self.input_proj = nn.Conv1d(in_dim, cfg.dimension, 1, bias=False)
        self.output_proj = nn.Conv1d(cfg.dimension, in_dim, 1, bias=False)
        self.layers = nn.ModuleList([EuclideanCodebook(cfg.dimension, cfg) for _ in range(max_codebooks)])

    def forward(self, x: Tensor, skip: Tensor | None = None) -> RVQResult:
        """Training/one-shot forward. `skip` [B] bool: samples whose output bypasses quantization (training)."""
        z = self.input_proj(x)
        flat = rearrange(z, "b d t -> (b t) d")  # [N, D]
        residual = flat
        out = torch.zeros_like(flat)
        codes, commit, replaced, entropy = [], [], [], []
        for layer in self.layers[: self.num_codebooks]:
            if self.training and not bool(layer.initialized):
                layer.init_kmeans(residual.detach().float())
            c = layer.encode(residual.detach().float())  # [N]
            q = layer.decode(c).to(residual.dtype)  # [N, D]
            commit.append(F.mse_loss(residual, q.detach()))
            if self.training:
                replaced.append(layer.update(residual.detach().float(), c))
                p = layer.cluster_usage / layer.cluster_usage.sum()
                entropy.append(float(-(p * torch.log(p.clamp(min=1e-12))).sum() / math.log(self.cfg.bins)))
            residual = residual - q.detach()
            out = out + q.detach()
            codes.append(c)
        if self.training:
            out = flat + (out - flat).detach()  # straight-through: d out / d flat = identity
        q = rearrange(out, "(b t) d -> b d t", b=x.shape[0])  # [B, D, T]
        if skip is not None:
            q = torch.where(skip[:, None, None], z, q)
        codes_t = rearrange(torch.stack(codes), "k (b t) -> b k t", b=x.shape[0])  # [B, K, T]
        return RVQResult(
            quantized=self.output_proj(q),
            codes=codes_t,
            commitment=torch.stack(commit).mean(),
            replaced=sum(replaced) / max(len(replaced), 1),
            entropy=sum(entropy) / max(len(entropy), 1),
        )

    def encode(self, x: Tensor) -> Tensor:  # [B, C, T] -> [B, K, T]
        z = self.input_proj(x)
        residual = rearrange(z, "b d t -> (b t) d").float()  # [N, D]
        codes = []
        for layer in self.layers[: self.num_codebooks]:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return rearrange(torch.stack(codes), "k (b t) -> b k t", b=x.shape[0])  # [B, K, T]

    def decode(self, codes: Tensor) -> Tensor:  # [B, K, T] -> [B, C, T]
        q = sum(layer.decode(codes[:, k]) for k, layer in enumerate(self.layers[: codes.shape[1]]))  # [B, T, D]
        q = rearrange(q, "b t d -> b d t")  # [B, D, T]
        return self.output_proj(q.to(self.output_proj.weight.dtype))


@dataclass
class SplitRVQResult:
    quantized: Tensor  # [B, C, T] semantic + acoustic outputs
    semantic: Tensor  # [B, C, T] output of the semantic codebook(s) alone (input of the distillation head)
    codes: Tensor  # [B, K, T]
    commitment: Tensor  # scalar
    replaced: float
    entropy: float


class SplitResidualVQ(nn.Module):
    """`rvq_first` (semantic) and `rvq_rest` (acoustic) quantize the same latent; their outputs add up."""

    def __init__(self, in_dim: int, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        n_sem = cfg.n_q_semantic
        self.rvq_first = ResidualVQ(in_dim, cfg, n_sem, n_sem)
        self.rvq_rest = ResidualVQ(in_dim, cfg, cfg.total_codebooks - n_sem, cfg.num_codebooks - n_sem)

    @property
    def num_codebooks(self) -> int:
        return self.rvq_first.num_codebooks + self.rvq_rest.num_codebooks

    def forward(self, x: Tensor) -> SplitRVQResult:
        skip = None
        if self.training and self.cfg.no_quantization_rate > 0:
            skip = torch.rand(x.shape[0], device=x.device) < self.cfg.no_quantization_rate  # [B]
        sem = self.rvq_first(x)  # the semantic output is always quantized: distillation shapes codebook 0
        ac = self.rvq_rest(x, skip)
        sem_out = sem.quantized
        if skip is not None:
            sem_out_for_sum = torch.where(skip[:, None, None], self.rvq_first.output_proj(self.rvq_first.input_proj(x)),
                                          sem.quantized)
        else:
            sem_out_for_sum = sem_out
        n_s, n_a = self.rvq_first.num_codebooks, self.rvq_rest.num_codebooks
        return SplitRVQResult(
            quantized=sem_out_for_sum + ac.quantized,
            semantic=sem_out,
            codes=torch.cat([sem.codes, ac.codes], dim=1),
            commitment=(sem.commitment * n_s + ac.commitment * n_a) / (n_s + n_a),
            replaced=(sem.replaced * n_s + ac.replaced * n_a) / (n_s + n_a),
            entropy=(sem.entropy * n_s + ac.entropy * n_a) / (n_s + n_a),
        )

    def encode(self, x: Tensor) -> Tensor:  # [B, C, T] -> [B, K, T]
        return torch.cat([self.rvq_first.encode(x), self.rvq_rest.encode(x)], dim=1)

    def decode(self, codes: Tensor) -> Tensor:  # [B, K, T] -> [B, C, T]
        n_s = self.cfg.n_q_semantic
        out = self.rvq_first.decode(codes[:, :n_s])
        if codes.shape[1] > n_s:
            out = out + self.rvq_rest.decode(codes[:, n_s:])
        return out

    def decode_semantic(self, codes: Tensor) -> Tensor:  # [B, K, T] -> [B, C, T] semantic codebooks only
        return self.rvq_first.decode(codes[:, : self.cfg.n_q_semantic])
