"""The main screen: write a prompt, generate, listen, roll again, compare takes, export.

Model loading and generation run in thread workers (separate groups, so loading another model
never cancels a generation); they only post the typed messages of `tui.messages`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Header, Input
from textual.worker import Worker, WorkerState

from samplemind_gen.catalog import ResolvedModel
from samplemind_gen.errors import NoAudioDeviceError, SampleMindError
from samplemind_gen.playback import LivePlayback
from samplemind_gen.request import GenerationRequest, Progress, validate_request
from samplemind_gen.service import AudioEngineWithGeneration
from samplemind_gen.take import Take
from samplemind_gen.tui.messages import (
    GenerationProgress,
    LivePeaks,
    ModelLoaded,
    ModelLoading,
    ModelNotDownloaded,
    TakeReady,
    Throttle,
)
from samplemind_gen.tui.widgets.analysis_panel import AnalysisPanel
from samplemind_gen.tui.widgets.key_bar import KeyBar
from samplemind_gen.tui.widgets.params_panel import ParamsPanel
from samplemind_gen.tui.widgets.prompt_input import PromptInput
from samplemind_gen.tui.widgets.status_line import StatusLine
from samplemind_gen.tui.widgets.take_list import TakeList
from samplemind_gen.tui.widgets.waveform import GrowingPeaks, Peaks, Waveform, compute_peaks

if TYPE_CHECKING:
    from samplemind_gen.tui.app import SampleMindApp

log = logging.getLogger(__name__)

VARIATIONS = 4
PLAYHEAD_FPS = 20
# Actions that start a generation: shown dimmed while one runs.
GENERATING_ACTIONS = {"generate", "roll", "variations"}
NEEDS_TAKE_ACTIONS = {"export", "toggle_play"}


class GenerateScreen(Screen[None]):
    """Prompt, parameters, take list, waveform and analysis of the selected take."""

    BINDING_GROUP_TITLE = "Generation"
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", id="generate", priority=True),
        Binding("ctrl+r", "roll", "Roll again", id="roll", priority=True),
        Binding("ctrl+n", "variations", f"{VARIATIONS} takes", id="variations", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+e", "export", "Export", id="export", priority=True),
        Binding("f2", "pick_model", "Model", id="model"),
        Binding("ctrl+l", "toggle_live", "Live play on/off", id="live", show=False),
    ]

    generating: var[bool] = var(False, bindings=True)
    has_take: var[bool] = var(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._peaks: dict[str, Peaks] = {}
        self._submitted_prompt: str | None = None
        self._playhead_timer: Timer | None = None
        self._model: ResolvedModel | None = None
        # The take being played while it is generated (settings.play_while_generating).
        self._live: LivePlayback | None = None
        # The waveform shows the take being generated until the producer picks another take.
        self._showing_live = False

    @property
    def session(self) -> SampleMindApp:
        return cast("SampleMindApp", self.app)

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        settings = self.session.settings
        yield Header()
        yield PromptInput(
            settings.prompt_history,
            id="prompt",
            placeholder="describe the sound, e.g. 'dusty lofi hip hop drums, 85 bpm' and press Enter",
        )
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield TakeList(id="takes")
                yield Waveform(id="waveform")
            with Vertical(id="right"):
                yield ParamsPanel(id="params")
                yield AnalysisPanel(id="analysis")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#takes").border_title = "takes"
        self.query_one("#waveform").border_title = "waveform"
        self.query_one("#params").border_title = "parameters"
        self.query_one("#analysis").border_title = "analysis"
        self.query_one(ParamsPanel).load(self.session.settings)
        self.query_one(AnalysisPanel).show(None)
        self.query_one(PromptInput).focus()
        self.use_model(self.session.model)

    # ------------------------------------------------------------------ models
    def use_model(self, model: str) -> None:
        """Show `model` as the current one and load it in the background."""
        self.session.model = model
        self.sub_title = model
        try:
            resolved = self.session.service.resolve(model)
        except SampleMindError as exc:
            self._model = None
            self.query_one(StatusLine).show_model("model not usable: F2 to pick one")
            self.session.show_failure(exc, "model")
            return
        self._model = resolved
        self.query_one(ParamsPanel).set_diffusion(resolved.spec.is_diffusion)
        # After the first paint: importing torch in the worker competes for the GIL, and the
        # window should be up before that starts.
        self.call_after_refresh(self.load_model, self.session.service, resolved)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load_model(self, service: AudioEngineWithGeneration, model: ResolvedModel) -> None:
        from samplemind_gen.store import model_status

        name = model.display_name
        if not model_status(model).usable:
            self.post_message(ModelNotDownloaded(name))
            return
        self.post_message(ModelLoading(name))
        started = time.perf_counter()
        # Warmed up while the producer types: the first take is then as quick as the next.

        def loading(progress: Progress) -> None:  # e.g. "compiling CPU kernels (once, ~20 s)"
            self.post_message(ModelLoading(name, progress.message or ""))

        engine = service.load(model, warm_up=True, on_progress=loading)
        self.post_message(
            ModelLoaded(name, engine.device, engine.dtype, time.perf_counter() - started)
        )
        # torch, transformers and librosa leave ~400k long-lived objects; a full collection over
        # them holds the GIL for 0.3-1 s and froze the UI mid-generation. Frozen objects are
        # skipped by the collector (they are still freed by reference counting).
        gc.freeze()

    def _is_current(self, model: str) -> bool:
        """False for messages from the load of a model that has since been replaced."""
        return self._model is not None and self._model.display_name == model

    def on_model_loading(self, message: ModelLoading) -> None:
        if self._is_current(message.model):
            self.query_one(StatusLine).show_model(f"{message.detail or 'model loading'}…")

    def on_model_loaded(self, message: ModelLoaded) -> None:
        if self._is_current(message.model):
            # The header names the model; the status line says only what state it is in.
            self.query_one(StatusLine).show_model(f"model ready · {message.device} {message.dtype}")
            log.info("loaded %s in %.1f s", message.model, message.seconds)

    def on_model_not_downloaded(self, message: ModelNotDownloaded) -> None:
        if self._is_current(message.model):
            self.query_one(StatusLine).show_model("model not downloaded: F2 to get it")

    def action_pick_model(self) -> None:
        from samplemind_gen.tui.screens.model_picker import ModelPickerScreen

        def chosen(model: str | None) -> None:
            if model and model != self.session.model:
                if not self.generating:
                    self.session.service.unload()  # one model in memory at a time
                self.session.settings.model = model
                self.session.save_settings()
                self.use_model(model)

        self.app.push_screen(ModelPickerScreen(self.session.model), chosen)

    # -------------------------------------------------------------- generation
    def action_generate(self) -> None:
        self._start(new_seed=False, count=1)

    def action_roll(self) -> None:
        self._start(new_seed=True, count=1)

    def action_variations(self) -> None:
        self._start(new_seed=True, count=VARIATIONS)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self) -> None:
        self.action_generate()

    def _start(self, *, new_seed: bool, count: int) -> None:
        if self.generating:
            return
        session = self.session
        prompt = self.query_one(PromptInput).value
        params = self.query_one(ParamsPanel)
        try:
            request = params.request(prompt, new_seed=new_seed)
            # Resolving again reports why an unusable model is unusable.
            model = self._model or session.service.resolve(session.model)
            validate_request(request, max_duration=model.spec.max_duration)
        except SampleMindError as exc:
            session.show_failure(exc, "cannot generate")
            return
        requests = [request] if count == 1 else session.service.variations(request, count)
        self.query_one(PromptInput).remember(prompt)
        session.settings.remember_prompt(prompt)
        session.settings.model = session.model
        params.store(request, session.settings)
        session.save_settings()
        self._submitted_prompt = prompt
        self._cancel = threading.Event()
        waiting = (
            "starting" if session.service.is_loaded(model) else "waiting for the model to load"
        )
        live = None
        if session.settings.play_while_generating:
            self._stop_playback()  # the new take is what plays next
            service = session.service
            live = LivePlayback(lambda: service.load(model).sample_rate)
        self._live = live
        self._showing_live = True
        self.generating = True
        self.query_one(StatusLine).show_job(f"{waiting}…")
        self.generate(session.service, requests, model, self._cancel, live)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def generate(
        self,
        service: AudioEngineWithGeneration,
        requests: list[GenerationRequest],
        model: ResolvedModel,
        cancel: threading.Event,
        live: LivePlayback | None = None,
    ) -> list[Take]:
        import torch

        # Grad mode is per thread and the model may have been loaded in another one.
        torch.set_grad_enabled(False)

        def post(progress: Progress) -> None:
            self.post_message(GenerationProgress(progress))

        report = Throttle(post)
        sketch: list[GrowingPeaks] = []

        def on_audio(chunk: Any, start: int) -> None:
            """The first take's audio as it is made: to the speakers, and to the waveform."""
            if live is not None:
                live.on_audio(chunk, start)
            if not sketch:
                rate = service.load(model).sample_rate
                sketch.append(
                    GrowingPeaks(chunk.shape[1], round(requests[0].duration * rate), rate)
                )
            growing = sketch[0]
            peaks = growing.add(chunk[0], start)
            self.post_message(LivePeaks(peaks, growing.filled / growing.sample_rate))

        try:
            takes = service.generate_blocking(
                requests,
                model=model,
                on_progress=report if live is None else live.chained(report),
                cancel=cancel,
                on_audio=on_audio,
            )
        except BaseException:
            if live is not None:
                live.stop()
            raise
        if live is not None:
            live.done_feeding()  # plays out what is queued, then closes the output
        peaks = {take.id: compute_peaks(take.audio, take.sample_rate) for take in takes}
        self.post_message(TakeReady(takes, peaks))
        return takes

    def on_live_peaks(self, message: LivePeaks) -> None:
        if not self.generating or self._cancel.is_set() or not self._showing_live:
            return
        waveform = self.query_one(Waveform)
        waveform.peaks = message.peaks
        # short: the title has the waveform's width (72 columns in a 120-column terminal)
        waiting = self._live.status() if self._live is not None else ""
        buffering = f" · {waiting}" if waiting else ""
        waveform.border_title = (
            f"waveform · generating · {message.seconds:.1f} of {message.peaks.duration:.1f} s"
            + buffering
        )
        self._follow_live_playhead()

    def _follow_live_playhead(self) -> None:
        """Move the playhead with the take playing live, once its sound has started."""
        live = self._live
        if live is not None and live.playing and self._playhead_timer is None:
            self._playhead_timer = self.set_interval(1 / PLAYHEAD_FPS, self._move_playhead)

    def on_generation_progress(self, message: GenerationProgress) -> None:
        if self.generating and not self._cancel.is_set():
            self.query_one(StatusLine).show_progress(message.progress)

    def on_take_ready(self, message: TakeReady) -> None:
        self._peaks.update(message.peaks)
        takes = self.query_one(TakeList)
        takes.add_takes(message.takes)
        self.has_take = True
        first = message.takes[0]
        self.query_one(ParamsPanel).show_seed(first.seed)
        self._show(first)
        prompt = self.query_one(PromptInput)
        # Move on to listening, unless the producer already started typing the next prompt.
        if prompt.has_focus and prompt.value == self._submitted_prompt:
            takes.focus()
        for note in dict.fromkeys(n for take in message.takes for n in take.notes):
            self.notify(note, title="note", severity="warning", markup=False)
        made = first.timings.get("total")
        done = f"{len(message.takes)} take{'s' if len(message.takes) > 1 else ''} ready"
        self.query_one(StatusLine).idle(f"{done} in {made:.1f} s" if made else done)
        live = self._live
        if live is not None and live.error is not None:
            # Said once; live play stays off until ctrl+l turns it back on.
            self.session.settings.play_while_generating = False
            self.session.show_failure(live.error, "live playback off")
            self._live = None
        else:  # a take still playing out: the playhead follows it on the new waveform
            self._follow_live_playhead()

    def action_cancel(self) -> None:
        if self.generating:
            self._cancel.set()
            if self._live is not None:
                self._live.stop()
            self.query_one(StatusLine).show_job("cancelling…")

    def action_toggle_live(self) -> None:
        settings = self.session.settings
        settings.play_while_generating = not settings.play_while_generating
        self.session.save_settings()
        state = "on" if settings.play_while_generating else "off"
        self.notify(f"play while generating: {state}", title="live play", markup=False)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            assert worker.error is not None
            what = "generation failed" if worker.group == "generate" else "model failed to load"
            self.session.show_failure(worker.error, what)
            if worker.group == "load":
                self.query_one(StatusLine).show_model("model failed to load: F2 to pick another")
        if worker.group == "generate" and worker.is_finished:
            self.generating = False
            if event.state != WorkerState.SUCCESS:
                self.query_one(StatusLine).idle()

    # ---------------------------------------------------------- takes, playback
    @on(TakeList.TakeHighlighted)
    def _take_highlighted(self, event: TakeList.TakeHighlighted) -> None:
        self._showing_live = False
        self._show(event.take)
        if self._is_playing():  # A/B: moving while playing plays the new take
            self._play(event.take)

    def _show(self, take: Take) -> None:
        waveform = self.query_one(Waveform)
        waveform.peaks = self._peaks.get(take.id)
        waveform.playhead = None
        waveform.border_title = (
            f"waveform · {take.channels} ch · {take.duration:.2f} s · seed {take.seed}"
        )
        self.query_one(AnalysisPanel).show(take)

    def _is_playing(self) -> bool:
        return self.session.player.playing or (self._live is not None and self._live.playing)

    def action_toggle_play(self) -> None:
        if self._is_playing():
            self._stop_playback()
            return
        take = self.query_one(TakeList).selected
        if take is not None:
            self._play(take)

    def _play(self, take: Take) -> None:
        self._stop_playback()
        try:
            self.session.player.play(take.audio, take.sample_rate)
        except NoAudioDeviceError as exc:
            self.session.show_failure(exc, "playback")
            return
        self._playhead_timer = self.set_interval(1 / PLAYHEAD_FPS, self._move_playhead)

    def _move_playhead(self) -> None:
        live = self._live
        player = live if live is not None and live.playing else self.session.player
        waveform = self.query_one(Waveform)
        waveform.playhead = player.position
        if not player.playing:
            self._stop_playback()

    def _stop_playback(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.session.player.stop()
        if self._playhead_timer is not None:
            self._playhead_timer.stop()
            self._playhead_timer = None
        self.query_one(Waveform).playhead = None

    def action_focus_prompt(self) -> None:
        self.query_one(PromptInput).focus()

    # ------------------------------------------------------------------ export
    def action_export(self) -> None:
        from samplemind_gen.tui.screens.export import ExportScreen

        take = self.query_one(TakeList).selected
        if take is None:
            return

        def exported(path: object) -> None:
            if path is not None:
                self.notify(f"exported to {path}", title="export", markup=False)
                self.query_one(AnalysisPanel).show(take)

        self.app.push_screen(ExportScreen(take), exported)

    # ----------------------------------------------------------------- footer
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.generating
        if action in GENERATING_ACTIONS and self.generating:
            return None
        if action in NEEDS_TAKE_ACTIONS:
            return self.has_take
        return True
