"""Run in a subprocess by test_tui_playback.py (PortAudio reads the ALSA configuration of the
process's HOME once, when it initialises): open the app with one tone take, press space with
the take list focused, and print what happened as JSON."""

from __future__ import annotations

import asyncio
import json
import time

from samplemind_gen.settings import Settings
from samplemind_gen.testing.takes import tone_take
from samplemind_gen.tui.app import SampleMindApp
from samplemind_gen.tui.messages import TakeReady
from samplemind_gen.tui.widgets.waveform import Waveform, compute_peaks


async def main() -> dict[str, object]:
    app = SampleMindApp(model="musicgen-small", settings=Settings())
    positions: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        take = tone_take(duration=1.0, channels=2)
        app.screen.post_message(TakeReady([take], {take.id: compute_peaks(take.audio, 32000)}))
        await pilot.pause()
        waveform = app.screen.query_one(Waveform)
        app.screen.watch(waveform, "playhead", lambda v: positions.append(v), init=False)
        app.screen.query_one("#takes").focus()
        await pilot.press("space")
        # The stream opens off the UI thread: wait for it to start (or to have played already).
        deadline = time.monotonic() + 5
        while not (app.player.playing or positions or len(app._notifications)):
            if time.monotonic() > deadline:
                break
            await pilot.pause(0.01)
        started = app.player.playing or bool(positions)
        deadline = time.monotonic() + 5
        while (app.player.playing or waveform.playhead is not None) and time.monotonic() < deadline:
            await pilot.pause(0.02)
        await pilot.pause(0.1)
        return {
            "started": started,
            "positions": [p for p in positions if p is not None],
            "ended": waveform.playhead is None and not app.player.playing,
            "toasts": [str(n.message) for n in app._notifications],
        }


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(main())))
