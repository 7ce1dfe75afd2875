"""The export dialog: folder, file name template and format, prefilled with the last choices so
Enter accepts them. Writes through the same core function as `samplemind-gen generate`
(`service.export_take_to`), recipe embedded, and dismisses with the path written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select
from textual.worker import Worker, WorkerState

from samplemind_gen import export, paths
from samplemind_gen.errors import SampleMindError
from samplemind_gen.take import Take

if TYPE_CHECKING:
    from samplemind_gen.tui.app import SampleMindApp

FORMAT_LABELS = {
    "wav16": "WAV 16-bit",
    "wav24": "WAV 24-bit",
    "wav32f": "WAV 32-bit float",
    "flac": "FLAC 24-bit",
    "ogg": "Ogg Vorbis",
}


def write_take(take: Take, folder: Path, template: str, fmt: str) -> Path:
    """Export `take` into `folder` (created if needed) exactly as the CLI does."""
    from samplemind_gen.service import export_take_to

    paths.ensure_writable_dir(folder)
    return export_take_to(take, folder, fmt=fmt, template=template)


class ExportScreen(ModalScreen[Path | None]):
    """Dismisses with the exported file's path, or None when cancelled."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="export.cancel")]

    def __init__(self, take: Take) -> None:
        super().__init__()
        self.take = take

    @property
    def session(self) -> SampleMindApp:
        return cast("SampleMindApp", self.app)

    def compose(self) -> ComposeResult:
        settings = self.session.settings
        folder = settings.export_folder or str(paths.export_dir())
        fmt = settings.export_format if settings.export_format in export.FORMATS else "wav24"
        with Vertical(id="dialog"):
            yield Label(Text(f"Export take · {self.take.prompt}"), id="dialog-title")
            with Horizontal(classes="field"):
                yield Label("folder", classes="field-label")
                yield Input(folder, id="folder")
            with Horizontal(classes="field"):
                yield Label("file name", classes="field-label")
                yield Input(settings.filename_template, id="template")
            with Horizontal(classes="field"):
                yield Label("format", classes="field-label")
                yield Select(
                    [(FORMAT_LABELS.get(name, name), name) for name in export.FORMATS],
                    value=fmt,
                    allow_blank=False,
                    id="format",
                )
            yield Label(id="target")
            yield Label(
                "Enter exports · Tab moves between fields · Escape cancels", classes="dialog-hint"
            )

    def on_mount(self) -> None:
        self.query_one("#folder", Input).focus()
        self._preview()

    def _choice(self) -> tuple[Path, str, str]:
        folder = Path(self.query_one("#folder", Input).value.strip() or ".").expanduser()
        template = self.query_one("#template", Input).value.strip() or export.DEFAULT_TEMPLATE
        fmt = str(self.query_one("#format", Select).value)
        return folder, template, fmt

    @on(Input.Changed)
    @on(Select.Changed)
    def _preview(self) -> None:
        folder, template, fmt = self._choice()
        try:
            name = export.default_filename(
                self.take.recipe, template, fmt=fmt, features=self.take.features
            )
            text = f"→ {folder / name}"
        except SampleMindError as exc:
            text = f"✗ {exc}"
        self.query_one("#target", Label).update(Text(text))

    @on(Input.Submitted)
    def _accept(self) -> None:
        if any(w.group == "export" and not w.is_finished for w in self.workers):
            return  # Enter pressed twice: one file is enough
        folder, template, fmt = self._choice()
        self.write(folder, template, fmt)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def write(self, folder: Path, template: str, fmt: str) -> Path:
        return write_take(self.take, folder, template, fmt)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            assert event.worker.error is not None
            self.session.show_failure(event.worker.error, "export failed")
        elif event.state == WorkerState.SUCCESS:
            folder, template, fmt = self._choice()
            settings = self.session.settings
            settings.export_folder, settings.filename_template = str(folder), template
            settings.export_format = fmt
            self.session.save_settings()
            self.dismiss(cast(Path, event.worker.result))
