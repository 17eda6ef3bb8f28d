"""The camera as tokens: a small VQ image tokenizer (conv encoder, finite scalar quantization, conv decoder).

One camera frame `[64, 64, 3]` uint8 becomes `grid * grid * groups` tokens: the encoder halves the image with
stride-2 convolutions down to a `grid x grid` map, each cell is projected to `groups` vectors of `len(levels)`
numbers, and each number is rounded to one of its `levels[i]` values (FSQ, Mentzer et al. 2023: no codebook to
learn, so none collapses; the straight-through estimator carries gradients through the rounding). A vector's
digits, read in mixed radix, are one token in `[0, prod(levels))`; token k of a frame is cell `k // groups` (row
major) and group `k % groups`, so in the policy each grid cell is its own input codebook and the model's embedding
tables say *where* a code is. The decoder (transposed convolutions) turns the tokens back into an image: it trains
the encoder and lets a person see what the tokens keep (`scripts/train_camera_vq.py` plots it).

Every frame is encoded on its own, so the tokenizer is causal and streams without state: a frame's tokens do not
depend on any other frame, and encoding frames one at a time gives the same tokens as a whole episode at once.

As a `multistream.tokenizer.Tokenizer`: `encode(images [B, T, H, W, 3] uint8) -> codes [B, K, T]` at the env's
12.5 frames/s, `decode(codes) -> images [B, T, H, W, 3] uint8`. Saved as `config.json` + `model.safetensors`;
`fingerprint` is a hash of the weights, which a policy records to refuse another tokenizer.

Dimension legend: B batch, T frames, N = B*T images, H/W image, C channels, G grid side, Q groups per cell,
L levels per group (digits), K = G*G*Q tokens per frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from multistream.atomic import atomic_write_text
from multistream.tokenizer import check_codes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
KIND = "camera_vq"


@dataclasses.dataclass(frozen=True)
class CameraVQConfig:
    image_size: int = 64
    grid: int = 8  # latent map side: image_size / grid must be a power of two
    groups: int = 1  # FSQ vectors (tokens) per grid cell
    levels: tuple[int, ...] = (8, 5, 5)  # values per FSQ digit; a token has prod(levels) values
    width: int = 64  # conv channels
    frame_rate: float = 12.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        if self.image_size < 8 or self.grid < 1 or self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} must be >= 8 and a multiple of grid {self.grid}")
        f = self.image_size // self.grid
        if f < 2 or f & (f - 1):
            raise ValueError(f"image_size / grid = {f} must be a power of two >= 2 (stride-2 convolutions)")
        if not self.levels or any(v < 2 for v in self.levels):
            raise ValueError(f"every FSQ level must be >= 2, got {self.levels}")
        if self.groups < 1 or self.width < 4:
            raise ValueError(f"groups must be >= 1 and width >= 4, got {self.groups}, {self.width}")
        if not self.frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {self.frame_rate}")

    @property
    def cardinality(self) -> int:
        return math.prod(self.levels)

    @property
    def num_codebooks(self) -> int:
        return self.grid * self.grid * self.groups

    @property
    def downsamples(self) -> int:
        return int(math.log2(self.image_size // self.grid))


class FSQ(nn.Module):
    """Finite scalar quantization: z [..., D] -> (values in [-1, 1] [..., D], indices [...]).

    Each digit is squashed by a sigmoid to [0, L-1], rounded (straight-through) and rescaled to [-1, 1]; the digits
    read in mixed radix (first digit most significant) are the index."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = tuple(levels)
        lv = torch.tensor(self.levels, dtype=torch.float32)
        radix = torch.tensor([math.prod(self.levels[i + 1:]) for i in range(len(self.levels))], dtype=torch.long)
        self.register_buffer("lv", lv, persistent=False)
        self.register_buffer("radix", radix, persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = self.lv - 1  # [D]
        x = torch.sigmoid(z.float()) * top  # [..., D] in [0, L-1]
        q = x + (torch.round(x) - x).detach()  # straight-through rounding
        idx = (torch.round(x).long() * self.radix).sum(-1)  # [...]
        return q / top * 2 - 1, idx

    def values(self, idx: torch.Tensor) -> torch.Tensor:
        """Indices [...] -> the quantized values [..., D] in [-1, 1] they stand for."""
        digits = (idx[..., None] // self.radix) % self.lv.long()  # [..., D]
        return digits.float() / (self.lv - 1) * 2 - 1


class CameraVQ(nn.Module):
    """The camera tokenizer (see the module doc). `encode`/`decode` are the Tokenizer protocol (uint8 images in and
    out); `forward(x [N, H, W, C] in [0, 1]) -> (reconstruction [N, H, W, C], indices [N, K])` is what training
    uses."""

    def __init__(self, cfg: CameraVQConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CameraVQConfig()
        w, d = cfg.width, len(cfg.levels) * cfg.groups
        # channels double as the map halves (w / 2^(n-1) at the first stride, w at the grid): full-resolution
        # layers stay narrow, which is most of the compute
        n = cfg.downsamples
        widths = [max(8, w >> (n - 1 - i)) for i in range(n)]  # after each stride-2 step
        enc: list[nn.Module] = []
        ch = 3
        for out in widths:
            enc += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.GELU()]
            ch = out
        enc += [nn.Conv2d(ch, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, d, 1)]
        self.encoder = nn.Sequential(*enc)
        self.fsq = FSQ(cfg.levels)
        dec: list[nn.Module] = [nn.Conv2d(d, w, 3, padding=1), nn.GELU()]
        ch = w
        for out in reversed(widths):  # w, ..., w / 2^(n-1)
            dec += [nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1), nn.GELU()]
            ch = out
        dec += [nn.Conv2d(ch, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self._fingerprint: str | None = None

    # --- the Tokenizer protocol -------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.cfg.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.cfg.cardinality

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k, v in sorted(self.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
            self._fingerprint = f"{KIND}:{h.hexdigest()[:16]}"
        return self._fingerprint

    def _check_images(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        s = self.cfg.image_size
        if x.dim() != 5 or tuple(x.shape[2:]) != (s, s, 3):
            raise ValueError(f"camera images must be [B, T, {s}, {s}, 3], got {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"camera images must be uint8 (0-255), got {x.dtype}")
        return x

    @torch.no_grad()
    def encode(self, x: Any) -> torch.Tensor:
        """uint8 images [B, T, H, W, 3] -> codes [B, K, T] (long)."""
        x = self._check_images(x)
        b, t = x.shape[:2]
        if b * t == 0:
            return torch.zeros(b, self.num_codebooks, t, dtype=torch.long)
        idx = self.tokens(rearrange(x, "b t h w c -> (b t) h w c").float() / 255.0)  # [N, K]
        return rearrange(idx, "(b t) k -> b k t", b=b)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> uint8 images [B, T, H, W, 3]."""
        check_codes(codes, self.num_codebooks, self.cardinality, "camera codes")
        b, _, t = codes.shape
        img = self.reconstruct(rearrange(codes.long(), "b k t -> (b t) k"))  # [N, H, W, 3] in [0, 1]
        return rearrange((img.clamp(0, 1) * 255).round().to(torch.uint8), "(b t) h w c -> b t h w c", b=b)

    # --- the network --------------------------------------------------------------------------------------------
    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        """images [N, H, W, 3] in [0, 1] -> pre-quantization [N, G, G, Q, L]."""
        z = self.encoder(rearrange(x, "n h w c -> n c h w") * 2 - 1)  # [N, Q*L, G, G]
        return rearrange(z, "n (q l) g1 g2 -> n g1 g2 q l", q=self.cfg.groups)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """images [N, H, W, 3] in [0, 1] -> token ids [N, K]."""
        _, idx = self.fsq(self._latent(x))  # [N, G, G, Q]
        return rearrange(idx, "n g1 g2 q -> n (g1 g2 q)")

    def _decode_values(self, q: torch.Tensor) -> torch.Tensor:
        """quantized [N, G, G, Q, L] -> images [N, H, W, 3] (unclamped, ~[0, 1])."""
        y = self.decoder(rearrange(q, "n g1 g2 q l -> n (q l) g1 g2"))  # [N, 3, H, W]
        return rearrange(y, "n c h w -> n h w c") * 0.5 + 0.5

    def reconstruct(self, idx: torch.Tensor) -> torch.Tensor:
        """token ids [N, K] -> images [N, H, W, 3] in ~[0, 1]."""
        g, q = self.cfg.grid, self.cfg.groups
        vals = self.fsq.values(rearrange(idx, "n (g1 g2 q) -> n g1 g2 q", g1=g, g2=g, q=q))  # [N, G, G, Q, L]
        return self._decode_values(vals)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, H, W, 3] in [0, 1] -> (reconstruction [N, H, W, 3], token ids [N, K])."""
        q, idx = self.fsq(self._latent(x))
        return self._decode_values(q), rearrange(idx, "n g1 g2 q -> n (g1 g2 q)")

    # --- files ----------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """`config.json` + `model.safetensors` in `path` (each written atomically)."""
        from multistream.checkpoint import save_checkpoint

        p = save_checkpoint(path, self, {"kind": KIND, **dataclasses.asdict(self.cfg), **(extra or {})})
        return Path(p)

    @classmethod
    def load(cls, path: str | Path) -> CameraVQ:
        from multistream.checkpoint import load_weights, read_config

        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no camera tokenizer at {path} (make one with scripts/train_camera_vq.py)")
        d = read_config(path)
        if d.get("kind") != KIND:
            raise ValueError(f"{path} is not a camera tokenizer checkpoint (kind {d.get('kind')!r})")
        fields = {f.name for f in dataclasses.fields(CameraVQConfig)}
        model = cls(CameraVQConfig(**{k: v for k, v in d.items() if k in fields}))
        load_weights(path, model)
        return model.eval()


def reconstruction_error(tok: CameraVQ, images: np.ndarray, background: np.ndarray | None = None,
                         threshold: float = 0.15, batch: int = 256) -> dict[str, float]:
    """Reconstruction error of uint8 frames [N, H, W, 3] through the tokens: mean squared error and PSNR (dB) over
    all pixels in [0, 1], and over the *foreground* pixels, those that differ from `background` ([H, W, 3] in
    [0, 1], e.g. the mean training frame) by more than `threshold` in some channel: the objects and the arm, a few
    percent of the frame, which an all-pixel error hides."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    se = fg_se = 0.0
    n_px = fg_px = 0
    was = tok.training
    tok.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).float() / 255.0  # [n, H, W, 3]
            y = tok.reconstruct(tok.tokens(x)).clamp(0, 1)
            e = (y - x) ** 2  # [n, H, W, 3]
            se += float(e.sum())
            n_px += e.numel()
            if background is not None:
                m = ((x - torch.as_tensor(background, dtype=torch.float32)).abs().amax(-1) > threshold)  # [n, H, W]
                fg_se += float((e * m[..., None]).sum())
                fg_px += int(m.sum()) * 3
    tok.train(was)
    mse = se / max(n_px, 1)
    out = {"mse": mse, "psnr_db": 10 * math.log10(1 / max(mse, 1e-12))}
    if background is not None:
        fg = fg_se / max(fg_px, 1)
        out.update(fg_mse=fg, fg_psnr_db=10 * math.log10(1 / max(fg, 1e-12)), fg_share=fg_px / max(n_px, 1))
    return out


def save_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


class CameraTokens:
    """A policy's camera tokenizer: a loaded `CameraVQ` and the path it came from (saved with the policy's
    tokenizers, so that a policy finds its camera VQ; its fingerprint refuses another one)."""

    def __init__(self, vq: CameraVQ, path: str | Path) -> None:
        self.vq, self.path = vq.eval(), str(path)

    @classmethod
    def load(cls, path: str | Path) -> CameraTokens:
        return cls(CameraVQ.load(path), path)

    frame_rate = property(lambda self: self.vq.frame_rate)
    num_codebooks = property(lambda self: self.vq.num_codebooks)
    cardinality = property(lambda self: self.vq.cardinality)
    fingerprint = property(lambda self: self.vq.fingerprint)

    def encode(self, x: Any) -> torch.Tensor:
        return self.vq.encode(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(codes)

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: dict[str, str]) -> CameraTokens:
        tok = cls.load(d["path"])
        if tok.fingerprint != d["fingerprint"]:
            raise ValueError(f"the camera VQ at {d['path']} is not the one this policy was trained with "
                             f"({tok.fingerprint} != {d['fingerprint']})")
        return tok
