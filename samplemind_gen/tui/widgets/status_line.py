"""Two things side by side: the model's state (loading, ready, not downloaded) and the running
job's progress (bar plus steps, seconds of audio, elapsed and ETA).

There is deliberately no indeterminate (animated) bar: redrawing it 15 times a second keeps the
UI thread busy enough that the generation thread waits on the GIL after every torch call, which
made a tiny model's decode 40x slower in a measurement. Stages without steps show text only."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from samplemind_gen.request import Progress, describe_progress


class StatusLine(Horizontal):
    """`show_model` for the model side, `show_progress`/`show_job`/`idle` for the job side."""

    def compose(self) -> ComposeResult:
        yield Label(id="model-status")
        yield ProgressBar(
            total=1, id="job-bar", show_eta=False, show_percentage=False
        )  # never indeterminate
        yield Label(id="job-text")

    def on_mount(self) -> None:
        self.idle()

    def show_model(self, text: str) -> None:
        self.query_one("#model-status", Label).update(Text(text))

    def show_progress(self, progress: Progress) -> None:
        bar = self.query_one("#job-bar", ProgressBar)
        measurable = progress.stage == "generating" and bool(progress.total)
        bar.display = measurable
        if measurable:
            bar.update(total=progress.total, progress=progress.step)
        self._job_text(describe_progress(progress))

    def show_job(self, text: str) -> None:
        """A job with no measurable progress (waiting for the model, cancelling)."""
        self.query_one("#job-bar", ProgressBar).display = False
        self._job_text(text)

    def idle(self, text: str = "") -> None:
        self.show_job(text)

    def _job_text(self, text: str) -> None:
        # The label's width is fixed (1fr), so skip the layout pass Static.update does by
        # default: a full-screen reflow four times a second was measurable UI-thread work.
        self.query_one("#job-text", Label).update(Text(text), layout=False)
