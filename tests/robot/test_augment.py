"""Training-batch augmentation of the policy (robot/augment.py): image shifts and brightness keep shapes and dtype,
are deterministic per (seed, step), touch only the training batches, and trimming padded frames is exact."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from envs import features as F
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.store import EpisodeStore
from robot.augment import ImageAugment, augment_images, augmented_batch_fn, trim_padding
from robot.demos import CollectConfig, collect
from robot.policy import (
    ACTION,
    PolicyConfig,
    PolicyTokenizers,
    build_policy_store,
    model_config,
    policy_binding,
    policy_streams,
)

ROOT = Path(__file__).resolve().parents[2]


def _images(b=3, t=4, h=16, w=16, seed=0):
    return torch.rand(b, t, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_shift_moves_whole_rows_and_keeps_shape_dtype_and_range():
    x = _images()
    g = torch.Generator().manual_seed(1)
    y = augment_images(x, ImageAugment(shift=2), g)
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)
    for i in range(x.shape[0]):  # each row is x shifted by one (dy, dx) for all its frames; edges replicated
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                src = x[i, :, max(0, dy) : 16 + min(0, dy), max(0, dx) : 16 + min(0, dx)]
                dst = y[i, :, max(0, -dy) : 16 + min(0, -dy), max(0, -dx) : 16 + min(0, -dx)]
                found = found or torch.equal(src, dst)
        assert found, f"row {i} is not a shifted copy of its input"


def test_brightness_scales_each_row_by_one_factor_and_clips():
    x = _images() * 0.5  # room to brighten without clipping
    y = augment_images(x, ImageAugment(brightness=0.3), torch.Generator().manual_seed(2))
    ratio = y / x
    for i in range(x.shape[0]):
        f = ratio[i].flatten()
        assert torch.allclose(f, f[0].expand_as(f), atol=1e-5) and 0.7 - 1e-6 <= float(f[0]) <= 1.3 + 1e-6
    bright = augment_images(torch.ones(2, 1, 4, 4, 3), ImageAugment(brightness=0.9), torch.Generator().manual_seed(0))
    assert float(bright.max()) <= 1.0


def test_augmentation_is_deterministic_per_step_and_off_when_inactive():
    calls = []

    def base(step, micro, rank, world):
        calls.append(step)
        return {"img": _images(seed=step), "tok": torch.zeros(3, 1, 4, dtype=torch.long)}

    aug = ImageAugment(shift=3, brightness=0.2)
    fn = augmented_batch_fn(base, ["img"], aug, seed=5)
    a, b, c = fn(7, 0, 0, 1), fn(7, 0, 0, 1), fn(8, 0, 0, 1)
    assert torch.equal(a["img"], b["img"]) and not torch.equal(a["img"], _images(seed=7))
    assert not torch.equal(augmented_batch_fn(base, ["img"], aug, seed=6)(7, 0, 0, 1)["img"], a["img"])
    assert c["img"].shape == a["img"].shape and torch.equal(a["tok"], b["tok"])
    # inactive: the training batches are the plain ones, no wrapper at all
    assert augmented_batch_fn(base, ["img"], ImageAugment(), seed=5) is base


def test_bad_options_are_refused_clearly():
    with pytest.raises(ValueError, match="shift must be an int >= 0"):
        ImageAugment(shift=-1)
    with pytest.raises(ValueError, match=r"brightness jitter must be in \[0, 1\)"):
        ImageAugment(brightness=1.5)
    with pytest.raises(ValueError, match="smaller than the image"):
        augment_images(_images(h=4, w=4), ImageAugment(shift=4), torch.Generator())
    with pytest.raises(ValueError, match="expected float images"):
        augment_images(torch.zeros(2, 4, 4, 3), ImageAugment(shift=1), torch.Generator())
    with pytest.raises(ValueError, match="no camera stream"):
        augmented_batch_fn(lambda *a: {}, [], ImageAugment(shift=1))
    r = subprocess.run([sys.executable, "scripts/train_policy.py", "--store", "nowhere", "--out", "nowhere",
                        "--aug-shift", "-2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "shift must be an int >= 0 pixels, got -2" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def policy_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("augment")
    collect(CollectConfig(task="touch", episodes=3, seed=20, image_size=32), tmp / "demos.zarr", progress=False)
    cfg = PolicyConfig(image_size=32, d_model=32, num_layers=1, depth_d_model=32, depth_layers=1)
    store = build_policy_store(EpisodeStore.open(tmp / "demos.zarr"), tmp / "policy.zarr", cfg, progress=False)
    return store, cfg


def test_trim_padding_is_exact_and_dropout_is_off_in_eval(policy_store):
    store, cfg = policy_store
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok)
    lengths = [store.episode_length(i) for i in range(store.num_episodes)]
    window = max(lengths) + 5  # padding in every row
    fn = binding.batch_fn(store, window=window, batch_size=2, seed=0, from_episode_start=True)
    batch = fn(0, 0, 0, 1)
    trimmed = trim_padding(batch, streams)
    t = trimmed[ACTION].shape[-1]
    assert t < window and t in lengths and trimmed[F.IMAGE_FRONT].shape[1] == t
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams, dropout=0.5)).eval()
    with torch.no_grad():
        full, cut = lm_loss(model(batch), streams).total, lm_loss(model(trimmed), streams).total
        again = lm_loss(model(batch), streams).total
    assert torch.allclose(full, cut, atol=1e-5) and torch.equal(full, again)  # same loss; dropout off in eval
    model.train()
    with torch.no_grad():
        assert not torch.equal(lm_loss(model(batch), streams).total, full)  # dropout acts in training


def test_brightness_works_in_pixel_space_under_any_normalisation():
    """With a standardised camera the batch holds (pixel - mean) / std: brightness must brighten and clip the pixels,
    not clip the standardised values to [0, 1] (which would wipe every below-mean pixel)."""
    g = torch.Generator().manual_seed(0)
    pix = torch.randint(0, 256, (3, 2, 8, 8, 3)).float()
    shift, scale = torch.tensor([149.0, 142.0, 129.0]), torch.tensor([91.0, 87.0, 79.0])
    aug = ImageAugment(brightness=0.3)
    out = augment_images((pix - shift) / scale, aug, torch.Generator().manual_seed(0), (shift, scale))
    unit = augment_images(pix / 255, aug, g)  # the same draws on [0, 1] images
    torch.testing.assert_close(out, (unit * 255 - shift) / scale, atol=1e-4, rtol=0)
    assert float(out.min()) < -1.0  # dark pixels stay dark: nothing clipped at 0 in the normalised space
    unit_norm = augment_images(pix / 255, aug, torch.Generator().manual_seed(0), (torch.zeros(()), torch.tensor(255.0)))
    torch.testing.assert_close(unit_norm, unit, atol=1e-6, rtol=0)
