"""Run in a subprocess by test_tui_playback.py: open the app on a tiny MusicGen checkpoint
(argv[1]) with play-while-generating on, generate one take, and print as JSON when the live
stream started compared with when the take was ready, and what the playhead did after."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from textual.message import Message

import samplemind_gen.tui.screens.generate as generate_screen
from samplemind_gen.playback import LivePlayback
from samplemind_gen.service import AudioEngineWithGeneration
from samplemind_gen.settings import Settings
from samplemind_gen.tui.app import SampleMindApp
from samplemind_gen.tui.messages import TakeReady
from samplemind_gen.tui.widgets.waveform import Waveform


class RecordedLivePlayback(LivePlayback):
    """The real LivePlayback, remembered so the driver can look at it after the screen let go."""

    made: list[LivePlayback] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.made.append(self)


generate_screen.LivePlayback = RecordedLivePlayback  # type: ignore[misc]


async def main(model: str, cancel: bool) -> dict[str, object]:
    service = AudioEngineWithGeneration()
    service.load(service.resolve(model))  # loaded up front: the test times generation only
    # The real engine, each step paced to 20 ms (real time at 50 frames/s), so the take is
    # still being generated while it plays: ALSA's null device consumes audio as fast as it
    # comes, so without pacing a tiny model's take would have played out before the UI looks.
    plain = service.generate_blocking

    def paced(*args, on_progress=None, **kwargs):  # type: ignore[no-untyped-def]
        def report(progress):  # type: ignore[no-untyped-def]
            if progress.stage == "generating":
                time.sleep(0.02)
            if on_progress is not None:
                on_progress(progress)

        return plain(*args, on_progress=report, **kwargs)

    service.generate_blocking = paced  # type: ignore[method-assign]
    settings = Settings(duration=3.0 if cancel else 1.5, play_while_generating=True)
    app = SampleMindApp(model=model, service=service, settings=settings)
    ready_at: list[float] = []

    def hook(message: Message) -> None:
        if isinstance(message, TakeReady) and not ready_at:
            ready_at.append(time.perf_counter())

    positions: list[float] = []
    result: dict[str, object] = {}
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await app.workers.wait_for_complete()
        screen = app.screen
        waveform = screen.query_one(Waveform)
        screen.watch(waveform, "playhead", lambda v: positions.append(v), init=False)
        screen.query_one("#prompt").focus()
        await pilot.press(*"lofi drums", "enter")
        if cancel:
            deadline = time.monotonic() + 20
            made = RecordedLivePlayback.made
            while not (made and made[-1].playing) and time.monotonic() < deadline:
                await pilot.pause(0.01)
            live = made[-1] if made else None
            result["playing_before_escape"] = bool(live and live.playing)
            await pilot.press("escape")
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            result["playing_after_escape"] = bool(live and live.playing)
        else:
            await app.workers.wait_for_complete()
            live = RecordedLivePlayback.made[-1]
            deadline = time.monotonic() + 10
            while (live.playing or waveform.playhead is not None) and time.monotonic() < deadline:
                await pilot.pause(0.02)
            await pilot.pause(0.1)
            player = live.player
            result.update(
                started_at=player.started_at if player else None,
                ready_at=ready_at[0] if ready_at else None,
                played_s=player.position if player else 0.0,
                underruns=player.underruns if player else 0,
                positions=[p for p in positions if p is not None],
                ended=waveform.playhead is None and not live.playing,
            )
        result["toasts"] = [str(n.message) for n in app._notifications]
    return result


if __name__ == "__main__":
    out = asyncio.run(main(sys.argv[1], cancel=len(sys.argv) > 2 and sys.argv[2] == "cancel"))
    print("RESULT " + json.dumps(out))
