"""The voice-commanded episode video (robot/episode_video.py, render_episode.py --policy): the reply text, the
audio mix, and an MP4 with video and audio streams from a tiny policy's episode."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from multistream.lm import RQTransformer
from multistream.store import EpisodeStore
from robot.demos import CollectConfig, collect
from robot.episode_video import agent_reply, mix, render_policy_episode
from robot.policy import (
    Policy,
    PolicyConfig,
    PolicyTokenizers,
    build_policy_store,
    model_config,
    policy_binding,
    policy_streams,
)

from ..speech.conftest import HAVE_TTS, make_codec


def test_agent_reply_confirms_what_it_understood():
    assert agent_reply("push", {"color": "red", "shape": "cube", "side": "left"}) == "okay, the red cube to the left"
    assert agent_reply("pick_place", {"color": "blue", "shape": "bar", "target": "plate"}) == \
        "okay, the blue bar on the plate"
    assert agent_reply("touch", {"color": "green", "shape": "cylinder"}) == "okay, the green cylinder"
    assert agent_reply("touch", {"color": "green"}) == "sorry, which object?"


def test_mix_places_clips_and_limits_the_peak():
    out = mix(1.0, [(0.0, np.ones(10, np.float32)), (0.5, np.full(10, 0.9, np.float32)), (2.0, np.ones(5))], 100)
    assert out.shape == (101,) and out[:10].max() <= 0.95 and out[50] > 0 and out[20] == 0


@pytest.mark.skipif(not HAVE_TTS or shutil.which("ffmpeg") is None, reason="needs TTS packages and ffmpeg")
def test_a_policy_episode_becomes_an_mp4_with_sound(tmp_path):
    collect(CollectConfig(task="touch", episodes=2, seed=30, image_size=32), tmp_path / "demos.zarr", progress=False)
    cfg = PolicyConfig(image_size=32, d_model=32, num_layers=1, depth_d_model=32, depth_layers=1, command="slots")
    store = build_policy_store(EpisodeStore.open(tmp_path / "demos.zarr"), tmp_path / "p.zarr", cfg, progress=False)
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    torch.manual_seed(0)
    policy = Policy(RQTransformer(model_config(cfg, streams)), cfg, tok, policy_binding(streams, tok).attach(store))
    make_codec(tmp_path / "codec")
    s = render_policy_episode(policy, "touch", 1003, tmp_path / "ep", correct_frame=2, view_size=(48, 64),
                              codec_path=tmp_path / "codec")
    assert s["success"] == s["rollout_success"]  # the replay is the episode the policy ran
    assert s["corrected_at"] == 2 and s["correction"]
    assert s["reply"].startswith("okay, the ")
    probe = subprocess.run(["ffprobe", "-loglevel", "error", "-show_entries", "stream=codec_type", "-of", "json",
                            s["path"]], capture_output=True, text=True, check=True)
    kinds = sorted(x["codec_type"] for x in json.loads(probe.stdout)["streams"])
    assert kinds == ["audio", "video"]
    with pytest.raises(ValueError, match="listener or a codec"):
        render_policy_episode(policy, "touch", 1003, tmp_path / "ep2")
