"""The library: browse and search every take, preview it with its waveform, rate it, re-roll it
(same recipe, new seed), regenerate it exactly (same seed), delete it to the trash and undo.

The search box takes words plus filters (`key:Am bpm:120 lufs:-16..-8 stars:4 fav tag:drums
model:small trash`, see `library.parse_query`). Audio is read and its peaks computed in a thread
worker; generation runs in the "generate" worker group, like the generate screen's.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from samplemind_gen.errors import BadInputError, NoAudioDeviceError, SampleMindError
from samplemind_gen.library import Library, StoredTake, TakeFilter, parse_query
from samplemind_gen.request import Progress
from samplemind_gen.take import Take
from samplemind_gen.tui.messages import GenerationProgress, Throttle
from samplemind_gen.tui.widgets.status_line import StatusLine
from samplemind_gen.tui.widgets.waveform import Peaks, Waveform, compute_peaks

if TYPE_CHECKING:
    from samplemind_gen.tui.app import SampleMindApp

COLUMNS = ("stars", "♥", "len", "bpm", "key", "LUFS", "model", "prompt")
PAGE = 500
SEARCH_DELAY = 0.25


class PreviewReady(Message):
    """A take's audio and peaks, read off the UI thread."""

    def __init__(self, take_id: str, take: Take, peaks: Peaks) -> None:
        super().__init__()
        self.take_id = take_id
        self.take = take
        self.peaks = peaks


class TakeRemade(Message):
    """A re-roll or exact regeneration finished and was recorded."""

    def __init__(self, take: Take, exact: bool) -> None:
        super().__init__()
        self.take = take
        self.exact = exact


def describe_entry(entry: StoredTake) -> str:
    r = entry.recipe
    f = entry.features or {}
    rows = [
        ("prompt", r.prompt),
        ("seed", str(r.seed)),
        ("model", r.model),
        ("made", f"{entry.created} on {r.device} {r.dtype}"),
        ("rating", "★" * (entry.rating or 0) or "-"),
        ("tags", ", ".join(entry.tags) or "-"),
        ("tempo", f"{f['tempo_bpm']:.1f} BPM" if f.get("tempo_bpm") else "-"),
        ("key", entry.key_label or "-"),
        ("loudness", f"{f['lufs']:.1f} LUFS" if f.get("lufs") is not None else "-"),
        ("file", str(entry.trash_path if entry.deleted else entry.path)),
    ]
    if entry.processing:
        rows.append(("processing", ", ".join(f"{k}={v}" for k, v in entry.processing.items())))
    return "\n".join(f"{name:>10}  {value}" for name, value in rows)


def row_cells(entry: StoredTake) -> tuple[str, ...]:
    f = entry.features or {}
    bpm = f.get("tempo_bpm")
    lufs = f.get("lufs")
    prompt = entry.prompt if len(entry.prompt) <= 60 else entry.prompt[:59] + "…"
    return (
        "★" * (entry.rating or 0),
        "♥" if entry.favourite else "",
        f"{entry.recipe.duration:.1f}s",
        f"{bpm:.0f}" if bpm else "-",
        entry.key_label or "-",
        f"{lufs:.1f}" if lufs is not None else "-",
        entry.recipe.model.rstrip("/").rsplit("/", 1)[-1][:18],
        prompt,
    )


class LibraryScreen(Screen[None]):
    """Every take the library remembers, searchable, with preview and rating."""

    DEFAULT_CSS = """
    LibraryScreen { layout: vertical; }
    #library-query { margin: 0 1; }
    #library-main { height: 1fr; }
    #library-table { width: 1fr; border: round $primary 50%; }
    #library-table:focus { border: round $accent; }
    #library-side { width: 56; }
    #library-waveform { height: 1fr; border: round $primary 50%; padding: 0 1; }
    #library-details { height: auto; max-height: 14; border: round $primary 50%; padding: 0 1; }
    #library-status { height: 1; }
    """
    BINDING_GROUP_TITLE = "Library"
    BINDINGS = [
        Binding("space", "toggle_play", "Play/stop", id="library-play"),
        Binding("1", "rate(1)", "1 star", show=False, id="rate-1"),
        Binding("2", "rate(2)", "2 stars", show=False, id="rate-2"),
        Binding("3", "rate(3)", "3 stars", show=False, id="rate-3"),
        Binding("4", "rate(4)", "4 stars", show=False, id="rate-4"),
        Binding("5", "rate(5)", "5 stars", show=False, id="rate-5"),
        Binding("0", "rate(0)", "Clear rating", show=False, id="rate-0"),
        Binding("f", "favourite", "Favourite", id="library-favourite"),
        Binding("r", "remake(False)", "Re-roll", id="library-reroll"),
        Binding("R", "remake(True)", "Regenerate exactly", id="library-regenerate"),
        Binding("delete", "delete", "Delete", id="library-delete"),
        Binding("u", "undo_delete", "Undo delete", id="library-undo"),
        Binding("ctrl+f", "focus_search", "Search", id="library-search"),
        Binding("escape", "back", "Back", id="library-back"),
    ]

    generating: var[bool] = var(False, bindings=True)

    def __init__(self, library: Library | None = None) -> None:
        super().__init__()
        self._library = library
        self._own_library = library is None
        self.entries: list[StoredTake] = []
        self.where = TakeFilter()
        self.preview: Take | None = None
        self._preview_id: str | None = None
        self._deleted: list[str] = []
        self._search_timer: Timer | None = None
        self._playhead_timer: Timer | None = None
        self._cancel = threading.Event()

    @property
    def session(self) -> SampleMindApp:
        return cast("SampleMindApp", self.app)

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library()
        return self._library

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(
            id="library-query",
            placeholder="search: words, key:Am bpm:120 lufs:-16..-8 stars:4 fav tag:drums trash",
        )
        with Horizontal(id="library-main"):
            yield DataTable(id="library-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="library-side"):
                yield Waveform(id="library-waveform")
                yield Static(id="library-details")
        yield StatusLine(id="library-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "library"
        self.query_one("#library-waveform").border_title = "preview"
        self.query_one("#library-details").border_title = "take"
        table.add_columns(*COLUMNS)
        self.refresh_entries()
        table.focus()

    def on_unmount(self) -> None:
        self.session.player.stop()
        if self._own_library and self._library is not None:
            self._library.close()

    # ------------------------------------------------------------------ listing
    def refresh_entries(self, keep: str | None = None) -> None:
        """Run the current query and redraw the table, keeping the cursor on `keep` (default:
        the take under the cursor now, when it still matches)."""
        if keep is None and self.selected is not None:
            keep = self.selected.id
        where = replace(self.where, limit=PAGE)
        self.entries = self.library.find(where)
        total = self.library.count(self.where)
        table = self.query_one(DataTable)
        table.clear()
        for entry in self.entries:
            table.add_row(*row_cells(entry), key=entry.id)
        more = f" (first {PAGE})" if total > len(self.entries) else ""
        table.border_subtitle = f"{total} takes{more}"
        if keep is not None:
            for i, entry in enumerate(self.entries):
                if entry.id == keep:
                    table.move_cursor(row=i)
                    break
        if not self.entries:
            self.query_one("#library-details", Static).update(
                Text("no takes match" if self.library.count() else "no takes yet: generate some")
            )
            self.query_one(Waveform).peaks = None
        self.refresh_bindings()

    @property
    def selected(self) -> StoredTake | None:
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row < 0 or table.cursor_row >= len(self.entries):
            return None
        return self.entries[table.cursor_row]

    @on(Input.Changed, "#library-query")
    def _query_changed(self, event: Input.Changed) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        value = event.value
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self.apply_query(value))

    @on(Input.Submitted, "#library-query")
    def _query_submitted(self, event: Input.Submitted) -> None:
        # Enter runs the query now; the debounced run of the same text would come later and
        # redraw the table under the cursor the producer has moved meanwhile.
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        self.apply_query(event.value)
        self.query_one(DataTable).focus()

    def apply_query(self, text: str) -> None:
        try:
            self.where = parse_query(text)
        except BadInputError as exc:
            self.query_one(StatusLine).idle(str(exc))
            return
        self.query_one(StatusLine).idle()
        self.refresh_entries()

    @on(DataTable.RowHighlighted, "#library-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self.selected
        if entry is None:
            return
        self.query_one("#library-details", Static).update(Text(describe_entry(entry)))
        if entry.id != self._preview_id:
            self._preview_id = entry.id
            self.preview = None
            self.query_one(Waveform).peaks = None
            self.load_preview(entry)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="library-preview")
    def load_preview(self, entry: StoredTake) -> None:
        take = entry.load()
        self.post_message(PreviewReady(entry.id, take, compute_peaks(take.audio, take.sample_rate)))

    def on_preview_ready(self, message: PreviewReady) -> None:
        if message.take_id != self._preview_id:
            return  # the cursor moved on
        self.preview = message.take
        self.query_one(Waveform).peaks = message.peaks
        self.refresh_bindings()

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("rate", "favourite", "delete", "remake") and self.selected is None:
            return None
        if action == "remake" and self.generating:
            return None
        if action == "toggle_play" and self.preview is None:
            return None
        if action == "undo_delete" and not self._deleted:
            return None
        if action == "delete" and self.selected is not None and self.selected.deleted:
            return None
        return True

    def action_rate(self, stars: int) -> None:
        entry = self.selected
        if entry is not None:
            self.library.rate(entry.id, stars or None)
            self.refresh_entries(keep=entry.id)

    def action_favourite(self) -> None:
        entry = self.selected
        if entry is not None:
            self.library.set_favourite(entry.id, not entry.favourite)
            self.refresh_entries(keep=entry.id)

    def action_delete(self) -> None:
        entry = self.selected
        if entry is None:
            return
        try:
            self.library.delete(entry.id)
        except SampleMindError as exc:
            self.session.show_failure(exc, "delete")
            return
        self._deleted.append(entry.id)
        if self._preview_id == entry.id:
            self.session.player.stop()
        self.notify(f"moved to the trash: {entry.prompt}  (u to undo)", markup=False)
        self.refresh_entries()

    def action_undo_delete(self) -> None:
        if not self._deleted:
            return
        take_id = self._deleted.pop()
        try:
            self.library.restore(take_id)
        except SampleMindError as exc:
            self.session.show_failure(exc, "restore")
            return
        self.notify("restored", markup=False)
        self.refresh_entries(keep=take_id)

    def action_focus_search(self) -> None:
        self.query_one("#library-query", Input).focus()

    def action_back(self) -> None:
        if self.generating:
            self._cancel.set()
            self.query_one(StatusLine).show_job("cancelling…")
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_toggle_play(self) -> None:
        player = self.session.player
        if player.playing:
            self._stop_playing()
            return
        if self.preview is None:
            return
        entry = self.selected
        loop = bool(entry and entry.processing.get("loop_bars"))
        try:
            player.play(self.preview.audio, self.preview.sample_rate, loop=loop)
        except NoAudioDeviceError as exc:
            self.session.show_failure(exc, "playback")
            return
        self._playhead_timer = self.set_interval(1 / 20, self._move_playhead)

    def _move_playhead(self) -> None:
        player = self.session.player
        waveform = self.query_one(Waveform)
        if not player.playing:
            self._stop_playing()
            return
        duration = self.preview.duration if self.preview is not None else 0.0
        waveform.playhead = player.position % duration if duration else player.position

    def _stop_playing(self) -> None:
        self.session.player.stop()
        if self._playhead_timer is not None:
            self._playhead_timer.stop()
            self._playhead_timer = None
        self.query_one(Waveform).playhead = None

    def action_remake(self, exact: bool) -> None:
        entry = self.selected
        if entry is None or self.generating:
            return
        self.generating = True
        self._cancel.clear()
        what = "regenerating exactly" if exact else "re-rolling"
        self.query_one(StatusLine).show_job(f"{what}: {entry.prompt}")
        self.remake(entry, exact)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def remake(self, entry: StoredTake, exact: bool) -> None:
        import torch

        from samplemind_gen.remake import remake_take

        torch.set_grad_enabled(False)  # per thread: pool threads may be fresh

        def post(progress: Progress) -> None:
            self.post_message(GenerationProgress(progress))

        throttle: Throttle[Progress] = Throttle(post)
        take = remake_take(
            self.session.service,
            self.library,
            entry,
            new_seed=not exact,
            on_progress=throttle,
            cancel=self._cancel,
        )
        self.post_message(TakeRemade(take, exact))

    def on_generation_progress(self, message: GenerationProgress) -> None:
        self.query_one(StatusLine).show_progress(message.progress)

    def on_take_remade(self, message: TakeRemade) -> None:
        self.generating = False
        self.query_one(StatusLine).idle()
        how = "regenerated" if message.exact else "re-rolled"
        self.notify(f"{how}: seed {message.take.seed}", markup=False)
        for note in message.take.notes:  # e.g. made on other kernels: it can differ
            self.notify(note, severity="warning", markup=False, timeout=10)
        self.refresh_entries(keep=message.take.id)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker: Worker[Any] = event.worker
        if event.state == WorkerState.ERROR:
            assert worker.error is not None
            if worker.group == "generate":
                self.generating = False
                self.query_one(StatusLine).idle()
            self.session.show_failure(worker.error, "library")
        elif event.state == WorkerState.CANCELLED and worker.group == "generate":
            self.generating = False
            self.query_one(StatusLine).idle()
