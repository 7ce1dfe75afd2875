"""The model picker: every catalog model with its family, size, whether it is downloaded, whether
it fits this machine's free memory, and its licence; the best fit is recommended. Enter uses
the highlighted model, downloading it first (with progress, Escape cancels) when it is not
cached. Dismisses with the model name, or None."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, ProgressBar
from textual.worker import Worker, WorkerState

from samplemind_gen.catalog import CATALOG, ModelSpec, ResolvedModel
from samplemind_gen.memory import FreeMemory, fits, free_memory, recommend
from samplemind_gen.tui.messages import DownloadProgress, Throttle

if TYPE_CHECKING:
    from samplemind_gen.store.progress import ByteProgress

COLUMNS = ("", "model", "family", "kind", "size", "cached", "fits", "licence")
GB = 1024**3


@dataclass(frozen=True)
class CatalogRow:
    spec: ModelSpec
    state: str  # the store's: cached, imported, partial, damaged, missing
    fits: bool | None

    @property
    def usable(self) -> bool:
        return self.state in ("cached", "imported")


def scan_catalog(memory: FreeMemory) -> list[CatalogRow]:
    """What the store holds of every catalog model, and whether it fits (disk only)."""
    from samplemind_gen.store import model_status

    return [
        CatalogRow(spec, model_status(ResolvedModel(spec)).state, fits(spec, memory))
        for spec in CATALOG.values()
    ]


def describe_memory(memory: FreeMemory) -> str:
    ram = f"{memory.ram / GB:.1f} GB" if memory.ram is not None else "unknown"
    if memory.vram is not None:
        return f"free: {ram} RAM, {memory.vram / GB:.1f} GB VRAM"
    return f"free: {ram} RAM, no GPU (generation runs on the CPU)"


class ModelPickerScreen(ModalScreen[str | None]):
    """`memory` is measured now unless given (tests pass a fixed one)."""

    BINDINGS = [
        Binding("escape", "close", "Close / cancel download", id="picker.close"),
    ]

    def __init__(self, current: str | None, memory: FreeMemory | None = None) -> None:
        super().__init__()
        self.current = current
        self.memory = memory or free_memory()
        self.rows: dict[str, CatalogRow] = {}
        self._cancel = threading.Event()
        self.downloading: str | None = None

    def compose(self) -> ComposeResult:
        best = recommend(CATALOG.values(), self.memory)
        advice = f"recommended here: {best.name}" if best else "no model fits the free memory"
        with Vertical(id="dialog"):
            yield Label("Models", id="dialog-title")
            yield Label(Text(f"{describe_memory(self.memory)} · ★ {advice}"), id="memory")
            yield Label(Text(f"● in use: {self.current or '-'}"), id="current")
            yield DataTable(id="catalog", cursor_type="row", zebra_stripes=True)
            yield ProgressBar(id="download-bar", show_eta=False)
            yield Label(id="download-text")
            yield Label(
                "Enter uses the model (downloads it first if needed) · Escape closes",
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one("#catalog", DataTable)
        table.add_columns(*COLUMNS)
        table.loading = True
        self.query_one("#download-bar").display = False
        self.scan(self.memory)

    @work(thread=True, exit_on_error=False, group="scan")
    def scan(self, memory: FreeMemory) -> list[CatalogRow]:
        return scan_catalog(memory)

    def _fill(self, rows: list[CatalogRow]) -> None:
        best = recommend(CATALOG.values(), self.memory)
        table = self.query_one("#catalog", DataTable)
        table.clear()
        self.rows = {row.spec.name: row for row in rows}
        for row in rows:
            spec = row.spec
            mark = ("●" if spec.name == self.current else " ") + ("★" if spec == best else " ")
            fit = {True: "yes", False: "no", None: "?"}[row.fits]
            table.add_row(
                mark,
                spec.name,
                spec.family,
                spec.kind,
                spec.size_label,
                "-" if row.state == "missing" else row.state,
                fit,
                spec.licence + (" (gated)" if spec.gated else ""),
                key=spec.name,
            )
        table.loading = False
        names = list(self.rows)
        if self.current in self.rows:
            table.move_cursor(row=names.index(self.current))
        elif best is not None:
            table.move_cursor(row=names.index(best.name))
        table.focus()

    @on(DataTable.RowSelected, "#catalog")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if self.downloading:
            return
        name = str(event.row_key.value)
        row = self.rows[name]
        if row.usable:
            self.dismiss(name)
            return
        self.downloading = name
        self._cancel = threading.Event()
        self.query_one("#download-bar", ProgressBar).display = True
        self.query_one("#download-text", Label).update(Text(f"downloading {name}…"))
        self.download(row.spec, self._cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="download")
    def download(self, spec: ModelSpec, cancel: threading.Event) -> str:
        from samplemind_gen.store.download import download_model

        def post(progress: ByteProgress) -> None:
            self.post_message(DownloadProgress(progress))

        report = Throttle(post)
        download_model(spec, on_progress=report, cancel=cancel)
        return spec.name

    def on_download_progress(self, message: DownloadProgress) -> None:
        from samplemind_gen.store.progress import describe_bytes

        p = message.progress
        self.query_one("#download-bar", ProgressBar).update(
            total=p.total_bytes or None, progress=p.done_bytes
        )
        self.query_one("#download-text", Label).update(Text(describe_bytes(p)))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "scan" and event.state == WorkerState.SUCCESS:
            self._fill(worker.result or [])
        if worker.group != "download" and event.state != WorkerState.ERROR:
            return
        if event.state == WorkerState.ERROR:
            assert worker.error is not None
            what = "download failed" if worker.group == "download" else "cannot read the cache"
            self.app.show_failure(worker.error, what)  # type: ignore[attr-defined]
        if worker.group == "download" and worker.is_finished:
            self.downloading = None
            self.query_one("#download-bar").display = False
            self.query_one("#download-text", Label).update("")
            if event.state == WorkerState.SUCCESS:
                self.dismiss(str(worker.result))

    def action_close(self) -> None:
        if self.downloading:
            self._cancel.set()
            self.query_one("#download-text", Label).update("cancelling…")
            return
        self.dismiss(None)
