import torch

from multistream.data import episode_to_arrays, store_batch_fn
from multistream.store import EpisodeStore
from multistream.toy import toy_batch, toy_streams


def test_store_batches_round_trip_and_are_deterministic(tmp_path):
    ss = toy_streams()
    store = EpisodeStore.create(tmp_path / "toy.zarr", fps=12.5)
    eps = toy_batch(3, 20, seed=0)
    for i in range(3):
        store.append_episode(episode_to_arrays({k: v[i] for k, v in eps.items()}, ss))
    fn = store_batch_fn(store, ss, window=8, batch_size=5, seed=1)
    a, b = fn(3, 0, 0, 1), fn(3, 0, 0, 1)
    assert a["src"].shape == (5, 2, 8) and a["out"].shape == (5, 2, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = fn(4, 0, 0, 1)
    assert not torch.equal(a["src"], c["src"])
    # every window is a real slice of one episode, with the toy rule intact
    for w in range(5):
        src = a["src"][w]
        hits = [(i, s) for i in range(3) for s in range(13) if torch.equal(eps["src"][i, :, s : s + 8], src)]
        assert len(hits) == 1
        i, s = hits[0]
        assert torch.equal(eps["out"][i, :, s : s + 8], a["out"][w])


# ---- the store-to-token binding over raw episodes ----------------------------------------------------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from multistream.data import (  # noqa: E402
    TOKENIZED_ATTR,
    StoreBinding,
    StreamBinding,
    check_tokenizer,
    spec_from_tokenizer,
    tokenizer_record,
)
from multistream.lm import LMConfig, RQTransformer  # noqa: E402
from multistream.streams import StreamSet, StreamSpec, valid_key  # noqa: E402
from multistream.transformer import TransformerConfig  # noqa: E402

SAMPLES = 16  # samples per frame of the toy "audio"


class Bins:
    """Per-dimension uniform bins over [-1, 1]: floats [B, T, C] -> codes [B, C, T]."""

    def __init__(self, channels: int, bins: int = 9, frame_rate: float = 12.5, fingerprint: str = "bins-v1"):
        self.channels, self.bins, self._rate, self.fingerprint = channels, bins, frame_rate, fingerprint

    frame_rate = property(lambda self: self._rate)
    num_codebooks = property(lambda self: self.channels)
    cardinality = property(lambda self: self.bins)

    def encode(self, x):
        return ((x.clamp(-1, 1) + 1) / 2 * (self.bins - 1)).round().long().transpose(1, 2)

    def decode(self, codes):
        return (codes.float() / (self.bins - 1) * 2 - 1).transpose(1, 2)


class FrameEnergy(Bins):
    """A toy audio tokenizer with its own layout: frames of samples [B, T, S] -> one code per frame."""

    def __init__(self):
        super().__init__(1, bins=5, fingerprint="energy-v1")

    def encode_frames(self, x):
        rms = x.float().pow(2).mean(-1, keepdim=True).sqrt()  # [B, T, 1]
        return self.encode(rms * 2 - 1)


def raw_episode(t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "observation.state": rng.normal(3.0, 2.0, (t, 4)).astype(np.float32),
        "observation.images.front": rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8),
        "camera_ok": rng.random(t) > 0.2,
        "observation.force": rng.uniform(-1, 1, (t, 3)).astype(np.float32),
        "audio": rng.uniform(-1, 1, (t, SAMPLES)).astype(np.float32),
        "action": rng.uniform(-1, 1, (t, 2)).astype(np.float32),
    }


def robot_like(tmp_path):
    force, act, audio = Bins(3), Bins(2, bins=7, fingerprint="act-v1"), FrameEnergy()
    ss = StreamSet((
        spec_from_tokenizer("action", act, predicted=True),
        spec_from_tokenizer("audio.user", audio),
        spec_from_tokenizer("observation.force", force, same_frame=True),
        StreamSpec("observation.state", continuous=True, feature_dim=4, same_frame=True),
        StreamSpec("observation.images.front", continuous=True, feature_shape=(8, 8, 3), encoder="conv2d",
                   same_frame=True),
    ))
    store = EpisodeStore.create(tmp_path / "robot.zarr", fps=12.5)
    rng = np.random.default_rng(0)
    eps = [raw_episode(t, rng) for t in (12, 15, 11)]
    for ep in eps:
        store.append_episode(ep)
    binding = StoreBinding(ss, 12.5, [
        StreamBinding(ss["action"], tokenizer=act),
        StreamBinding(ss["audio.user"], key="audio", tokenizer=audio),
        StreamBinding(ss["observation.force"], tokenizer=force),
        StreamBinding(ss["observation.state"], normalize="meanstd"),
        StreamBinding(ss["observation.images.front"], normalize="unit", valid="camera_ok"),
    ])
    return ss, store, eps, binding, (force, act, audio)


def test_binding_turns_raw_episodes_into_model_batches(tmp_path):
    ss, store, eps, binding, (force, act, audio) = robot_like(tmp_path)
    fn = binding.batch_fn(store, window=6, batch_size=4, seed=0)
    a, b = fn(0, 0, 0, 1), fn(0, 0, 0, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["action"].shape == (4, 2, 6) and a["audio.user"].shape == (4, 1, 6)
    assert a["observation.images.front"].shape == (4, 6, 8, 8, 3)
    assert a[valid_key("observation.images.front")].dtype == torch.bool
    # a whole episode through the binding equals the tokenizers / statistics applied by hand
    ep = binding.episode(store, 1)
    raw = {k: torch.from_numpy(v)[None] for k, v in eps[1].items()}
    assert torch.equal(ep["observation.force"], force.encode(raw["observation.force"]))
    assert torch.equal(ep["action"], act.encode(raw["action"]))
    assert torch.equal(ep["audio.user"], audio.encode_frames(raw["audio"]))
    st = store.stats["observation.state"]
    want = (raw["observation.state"] - torch.tensor(st["mean"], dtype=torch.float32)) / torch.tensor(
        st["std"], dtype=torch.float32)
    torch.testing.assert_close(ep["observation.state"], want)
    torch.testing.assert_close(ep["observation.images.front"], raw["observation.images.front"].float() / 255)
    assert torch.equal(ep[valid_key("observation.images.front")], raw["camera_ok"])
    # and the model trains on it
    torch.manual_seed(0)
    m = RQTransformer(LMConfig(streams=ss, temporal=TransformerConfig(d_model=32, num_layers=1, num_heads=4),
                               depth=TransformerConfig(d_model=16, num_layers=1, num_heads=2)))
    from multistream.loss import lm_loss

    lm_loss(m(a), ss).total.backward()


def test_one_clock_and_tokenizer_mismatches_are_refused(tmp_path):
    ss, store, eps, binding, (force, act, audio) = robot_like(tmp_path)
    with pytest.raises(ValueError, match="runs at 25.0 frames/s but the model at 12.5"):
        check_tokenizer(ss["observation.force"], Bins(3, frame_rate=25.0), 12.5)
    with pytest.raises(ValueError, match="tokenizer has 3 codebooks x 5 entries, the spec 3 x 9"):
        check_tokenizer(ss["observation.force"], Bins(3, bins=5), 12.5)
    with pytest.raises(ValueError, match="runs at 12.5 frames/s but the model at 25.0"):
        StoreBinding(ss, 25.0, [StreamBinding(ss["action"])]).attach(store)
    with pytest.raises(ValueError, match="no key 'nope'"):
        StoreBinding(ss, 12.5, [StreamBinding(ss["action"], key="nope", tokenizer=act)]).attach(store)
    no_tok = [b for b in binding.bindings if b.spec.name != "action"] + [StreamBinding(ss["action"])]
    with pytest.raises(ValueError, match="holds float32 values; stream 'action' needs integer codes"):
        StoreBinding(ss, 12.5, no_tok).attach(store)
    with pytest.raises(ValueError, match="normalize/valid apply to continuous streams only"):
        StreamBinding(ss["action"], normalize="meanstd")
    with pytest.raises(ValueError, match="binding for unknown stream 'x'"):
        StoreBinding(ss, 12.5, [StreamBinding(StreamSpec("x", vocab_size=3))])


def test_tokenized_store_records_its_tokenizer_and_refuses_another(tmp_path):
    tok = Bins(2, bins=7, fingerprint="act-v1")
    ss = StreamSet((spec_from_tokenizer("action", tok, predicted=True),))
    store = EpisodeStore.create(tmp_path / "codes.zarr", fps=12.5,
                                attrs={TOKENIZED_ATTR: {"action": tokenizer_record(tok)}})
    x = torch.rand(1, 10, 2) * 2 - 1
    codes = tok.encode(x)  # [1, 2, 10]
    store.append_episode({"action": codes[0].T.numpy().astype(np.int16)})
    same = StoreBinding(ss, 12.5, [StreamBinding(ss["action"], tokenizer=Bins(2, bins=7, fingerprint="act-v1"))])
    assert torch.equal(same.attach(store).episode(store, 0)["action"], codes)  # stored codes, not re-encoded
    other = StoreBinding(ss, 12.5, [StreamBinding(ss["action"], tokenizer=Bins(2, bins=7, fingerprint="act-v2"))])
    with pytest.raises(ValueError, match="was tokenized by .*act-v1.* re-tokenize the data or use the same"):
        other.attach(store)
