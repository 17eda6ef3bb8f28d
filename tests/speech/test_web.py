"""The web client in real headless Chromium: a fake microphone (a wav file) talks to the server on loopback; the
page connects, streams audio in real time, plays the agent's audio and shows the monologue text."""

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is a dev dependency (make test installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them "
                                       "when run as root)")
ROOT = Path(__file__).resolve().parents[2]


class ServerThread:
    """The chat server on a free loopback port, in its own thread and event loop."""

    def __init__(self, session) -> None:
        from aiohttp import web

        from speech.server import ChatServer

        self.server = ChatServer(session)
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.web = web
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = self.web.AppRunner(self.server.app)
        self.loop.run_until_complete(self.runner.setup())
        site = self.web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def browser(mic_wav: Path, tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-audio-capture={mic_wav}", "--autoplay-policy=no-user-gesture-required",
              f"--user-data-dir={tmp / 'profile'}", "--window-size=900,760"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.mark.parametrize("wire", ["pcm16", "opus"])
def test_page_talks_to_the_server_in_chromium(dialogues, tmp_path, wire):
    """With 16-bit PCM and with Opus on the wire (the page's WebCodecs, the server's PyAV)."""
    if wire == "opus":
        from speech import opus

        if not opus.available():
            pytest.skip("needs PyAV with libopus on the server (make test installs it)")
    from multistream.lm import RQTransformer
    from multistream.presets import tiny
    from speech.audio import write_wav
    from speech.chat import ChatSession
    from speech.dataset import read_item
    from speech.streams import MonologueText, chat_streams

    from .conftest import make_codec

    codec = make_codec(tmp_path / "codec")
    text = MonologueText(dialogues / "tokenizer.model")
    torch.manual_seed(0)
    model = RQTransformer(tiny(chat_streams(codec, text))).eval()
    audio, sr, _ = read_item(sorted((dialogues / "train").glob("*.wav"))[0])
    mic = tmp_path / "mic.wav"
    write_wav(mic, audio[1, : 4 * sr], sr)  # 4 s of a user's voice as the fake microphone
    with ServerThread(ChatSession(model, codec, text, batch_size=2, seed=0)) as srv:
        drv = browser(mic, tmp_path)
        try:
            drv.get(f"http://127.0.0.1:{srv.port}/?audio={wire}")
            assert "multistream chat" in drv.title
            drv.find_element("id", "start").click()
            t0 = time.monotonic()
            stats = {}
            while time.monotonic() - t0 < 40:
                stats = drv.execute_script("return window.chatStats")
                if stats["error"] or (stats["sent"] >= 50 and stats["received"] >= 40 and stats["text"]):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
            assert stats["error"] is None, stats
            assert stats["connected"] and stats["audio"] == wire, stats
            # real time: about 12.5 frames per second of microphone audio were sent
            assert 50 <= stats["sent"] <= 12.5 * elapsed * 1.3 + 10, (stats, elapsed)
            assert stats["received"] >= 40 and stats["text"], stats
            assert stats["played"] >= stats["received"] - 5, stats  # every frame decoded and queued to play
            # read the page and the stats in one script call: text keeps arriving between two calls
            shown, streamed = drv.execute_script(
                "return [document.getElementById('text').textContent, window.chatStats.text]"
            )
            assert shown.strip() and shown == streamed
            assert int(drv.find_element("id", "received").text) > 0
            assert drv.find_element("id", "wire").text == wire
            out = ROOT / "docs" / "web_client.png"
            drv.save_screenshot(str(tmp_path / "page.png"))
            if not out.exists() and wire == "pcm16":  # the README's picture; regenerate by deleting it
                shutil.copyfile(tmp_path / "page.png", out)
        finally:
            drv.quit()
    assert np.isfinite(srv.server.tick_ms).all()
