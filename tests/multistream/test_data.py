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
