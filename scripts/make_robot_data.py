"""usage: python scripts/make_robot_data.py --demos runs/demos/touch.zarr --out data/robot/touch.zarr
                                         [--command-every-frame [--reply]]

Turns an expert demo store (`scripts/collect_demos.py`) into the policy's episode store: per episode a listening
prefix (the instruction, one word per 80 ms frame, while the robot holds still) and then the demonstration's
frames, with the action tokenized by uniform bins and force/touch quantile bins fitted on the demos (saved in the
store's attrs). Resumable: rerun with the same options to add the demo episodes not yet converted.

`--command-every-frame`: the other command layout (robot.policy, PolicyConfig(command="slots")): no listening
prefix and no word stream; the instruction's parsed slots (colour, shape, side, target) are stored on every frame
as the input stream `command.slots`, and the robot acts from the first frame. Policies trained on such a store
read the command that way (the layout travels in the store's and the checkpoint's policy config).

`--reply` (with --command-every-frame): the agent's own words as a predicted `text` stream (robot/reply.py): its
reply to the command ("okay, the red cube to the left") one word per frame from frame 0, and to a correction or a
"stop" from that frame ("okay, the blue cube", "okay, stopping"); PAD on the other frames.

`--reply-audio K --codec PATH` (with --reply): the agent also says its reply, as a predicted `audio.agent` stream:
the agent voice's TTS of each reply from its frame, encoded by the codec at PATH, its first K codebooks (the policy
generates them like the chat model's agent audio). `--reply-tail N`: N frames after each demo's end in which the
robot holds still and only talks (a reply takes longer to say than a touch takes to do).
"""

import argparse
import sys
from pathlib import Path

from multistream.store import EpisodeStore
from robot.policy import PolicyConfig, build_policy_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True, help="demo store written by scripts/collect_demos.py")
    ap.add_argument("--out", required=True, help="policy store to create or resume")
    ap.add_argument("--action-bins", type=int, default=PolicyConfig.action_bins)
    ap.add_argument("--sensor-bins", type=int, default=PolicyConfig.sensor_bins)
    ap.add_argument("--no-camera", action="store_true", help="leave the camera stream out")
    ap.add_argument("--command-every-frame", action="store_true",
                    help="the command's parsed slots on every frame (stream command.slots), no listening prefix")
    ap.add_argument("--reply", action="store_true", help="the agent's reply words as a predicted text stream")
    ap.add_argument("--reply-audio", type=int, default=0, metavar="K",
                    help="with --reply: the spoken reply as a predicted audio.agent stream of K codec codebooks")
    ap.add_argument("--codec", default="checkpoints/codec_spectral", help="the codec of --reply-audio")
    ap.add_argument("--reply-tail", type=int, default=0, metavar="N",
                    help="with --reply: N frames after each episode's end in which the robot only talks")
    args = ap.parse_args()
    if not Path(args.demos).exists():
        sys.exit(f"error: no demo store at {args.demos} (make one with scripts/collect_demos.py)")
    try:
        cfg = PolicyConfig(action_bins=args.action_bins, sensor_bins=args.sensor_bins, camera=not args.no_camera,
                           command="slots" if args.command_every_frame else "listen", reply=args.reply,
                           reply_audio=args.reply_audio, reply_tail=args.reply_tail)
        voice = None
        if cfg.reply_audio and not Path(args.out).exists():  # a resumed store reloads its own
            from robot.reply import ReplyVoice

            voice = ReplyVoice.load(args.codec, cfg.reply_audio)
        demos = EpisodeStore.open(args.demos)
        store = build_policy_store(demos, args.out, cfg, voice=voice)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"{store}: {store.num_episodes} episodes from {demos.num_episodes} demos")


if __name__ == "__main__":
    main()
