"""The queue: the batch in the library database, item by item, with per-item progress. Add
prompts, cancel or reorder pending items, start (or resume) and stop the batch.

The batch runs `batch.run_batch` in the "generate" worker group; the runner's events come back
as messages (progress throttled), so the table shows which item runs and how far it is.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input
from textual.worker import Worker, WorkerState

from samplemind_gen.batch import BatchEvent, BatchItem, BatchQueue
from samplemind_gen.errors import GenerationCancelled
from samplemind_gen.library import Library
from samplemind_gen.request import GenerationRequest, Progress
from samplemind_gen.tui.messages import Throttle
from samplemind_gen.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from samplemind_gen.tui.app import SampleMindApp

COLUMNS = ("#", "status", "progress", "model", "seed", "prompt")


class QueueEvent(Message):
    """A `BatchEvent` from the runner thread."""

    def __init__(self, event: BatchEvent) -> None:
        super().__init__()
        self.event = event


class QueueProgress(Message):
    def __init__(self, item_ids: list[int], progress: Progress) -> None:
        super().__init__()
        self.item_ids = item_ids
        self.progress = progress


class QueueFinished(Message):
    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.counts = counts


class QueueScreen(Screen[None]):
    """One batch's items: pending, running (with progress), done, failed, cancelled."""

    DEFAULT_CSS = """
    QueueScreen { layout: vertical; }
    #queue-add { margin: 0 1; }
    #queue-table { height: 1fr; border: round $primary 50%; }
    #queue-table:focus { border: round $accent; }
    #queue-status { height: 1; }
    """
    BINDING_GROUP_TITLE = "Queue"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start/resume", id="queue-start", priority=True),
        Binding("escape", "stop_or_back", "Stop/back", id="queue-stop"),
        Binding("a", "focus_add", "Add prompt", id="queue-add"),
        Binding("c", "cancel_item", "Cancel item", id="queue-cancel"),
        Binding("[", "move(-1)", "Move up", id="queue-up"),
        Binding("]", "move(1)", "Move down", id="queue-down"),
    ]

    running: var[bool] = var(False, bindings=True)

    def __init__(self, library: Library | None = None, batch_id: str | None = None) -> None:
        super().__init__()
        self._library = library
        self._own_library = library is None
        self.batch_id = batch_id
        self.items: list[BatchItem] = []
        self.progress: dict[int, str] = {}
        self._cancel = threading.Event()

    @property
    def session(self) -> SampleMindApp:
        return cast("SampleMindApp", self.app)

    @property
    def queue(self) -> BatchQueue:
        if self._library is None:
            self._library = Library()
        return BatchQueue(self._library)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(id="queue-add", placeholder="add a prompt to the queue and press Enter")
        yield DataTable(id="queue-table", cursor_type="row", zebra_stripes=True)
        yield StatusLine(id="queue-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        if self.batch_id is None:
            batches = self.queue.batches()
            unfinished = [b for b in batches if b.unfinished]
            chosen = unfinished[0] if unfinished else (batches[0] if batches else None)
            self.batch_id = chosen.id if chosen else None
        self.refresh_items()
        table.focus()

    def on_unmount(self) -> None:
        self._cancel.set()
        if self._own_library and self._library is not None and not self.running:
            self._library.close()

    # ------------------------------------------------------------------ table
    def refresh_items(self, keep: int | None = None) -> None:
        table = self.query_one(DataTable)
        if keep is None and self.selected is not None:
            keep = self.selected.id
        self.items = self.queue.items(self.batch_id) if self.batch_id else []
        table.clear()
        for item in self.items:
            table.add_row(
                str(item.position + 1),
                item.status,
                self.progress.get(item.id, "100%" if item.status == "done" else ""),
                item.model.rstrip("/").rsplit("/", 1)[-1][:20],
                str(item.request.seed),
                item.request.prompt
                if item.error is None
                else f"{item.request.prompt} ({item.error})",
                key=str(item.id),
            )
        if self.batch_id:
            info = self.queue.info(self.batch_id)
            counts = ", ".join(f"{n} {s}" for s, n in sorted(info.counts.items()))
            table.border_title = f"batch {info.id}"
            table.border_subtitle = counts
        else:
            table.border_title = "queue"
            table.border_subtitle = "empty: add a prompt"
        if keep is not None:
            for i, item in enumerate(self.items):
                if item.id == keep:
                    table.move_cursor(row=i)
        self.refresh_bindings()

    @property
    def selected(self) -> BatchItem | None:
        try:
            table = self.query_one(DataTable)
        except Exception:
            return None
        if not self.items or not 0 <= table.cursor_row < len(self.items):
            return None
        return self.items[table.cursor_row]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        pending = self.selected is not None and self.selected.status == "pending"
        if action in ("cancel_item", "move") and not pending:
            return None
        if action == "start" and (
            self.running or not any(i.status in ("pending", "running") for i in self.items)
        ):
            return None
        return True

    # ------------------------------------------------------------------ editing
    def action_focus_add(self) -> None:
        self.query_one("#queue-add", Input).focus()

    @on(Input.Submitted, "#queue-add")
    def _add(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            return
        settings = self.session.settings
        request = GenerationRequest(
            prompt,
            duration=settings.duration,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            guidance_scale=settings.guidance_scale,
            steps=settings.steps,
            negative_prompt=settings.negative_prompt or None,
        )
        model = self.session.model
        if self.batch_id is None:
            from samplemind_gen import paths
            from samplemind_gen.batch import BatchItemSpec

            self.batch_id = self.queue.create(
                [BatchItemSpec(request=request)],
                default_model=model,
                source="tui",
                out_dir=paths.export_dir() / "queue",
            )
        else:
            self.queue.append(self.batch_id, model, [request])
        event.input.value = ""
        self.refresh_items()

    def action_cancel_item(self) -> None:
        item = self.selected
        if item is not None:
            self.queue.cancel([item.id])
            self.refresh_items(keep=item.id)

    def action_move(self, delta: int) -> None:
        item = self.selected
        if item is None:
            return
        index = self.items.index(item)
        self.queue.move(item.id, max(0, index + delta))
        self.refresh_items(keep=item.id)

    # ------------------------------------------------------------------ running
    def action_start(self) -> None:
        if self.running or self.batch_id is None:
            return
        self.running = True
        self._cancel.clear()
        self.query_one(StatusLine).show_job("starting the batch…")
        self.run_queue(self.batch_id)

    def action_stop_or_back(self) -> None:
        if self.running:
            self._cancel.set()
            self.query_one(StatusLine).show_job("stopping after this step…")
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def run_queue(self, batch_id: str) -> None:
        import torch

        from samplemind_gen.batch import run_batch

        torch.set_grad_enabled(False)  # per thread: pool threads may be fresh

        assert self._library is not None
        running: list[int] = []

        def post(progress: Progress) -> None:
            self.post_message(QueueProgress(list(running), progress))

        throttle: Throttle[Progress] = Throttle(post)

        def on_event(event: BatchEvent) -> None:
            if event.kind == "progress" and event.progress is not None:
                running[:] = [i.id for i in event.items]
                throttle(event.progress)
            else:
                self.post_message(QueueEvent(event))

        try:
            info = run_batch(
                batch_id,
                library=self._library,
                service=self.session.service,
                batch_size=int(self.queue.info(batch_id).options.get("batch_size", 4)),
                on_event=on_event,
                cancel=self._cancel,
            )
        except GenerationCancelled:
            self.post_message(QueueFinished(self.queue.info(batch_id).counts))
            return
        self.post_message(QueueFinished(info.counts))

    def on_queue_progress(self, message: QueueProgress) -> None:
        percent = f"{100 * message.progress.fraction:.0f}%"
        for item_id in message.item_ids:
            self.progress[item_id] = percent
        table = self.query_one(DataTable)
        for item_id in message.item_ids:
            try:
                table.update_cell(str(item_id), table.ordered_columns[2].key, percent)
                table.update_cell(str(item_id), table.ordered_columns[1].key, "running")
            except Exception:  # the row is gone (table redrawn): the next refresh has it
                pass
        self.query_one(StatusLine).show_progress(message.progress)

    def on_queue_event(self, message: QueueEvent) -> None:
        event = message.event
        if event.kind == "done":
            for item in event.items:
                self.progress[item.id] = "100%"
        self.query_one(StatusLine).show_job(f"{event.done}/{event.total} done")
        self.refresh_items()

    def on_queue_finished(self, message: QueueFinished) -> None:
        self.running = False
        counts = ", ".join(f"{n} {s}" for s, n in sorted(message.counts.items()))
        self.query_one(StatusLine).idle(counts)
        self.notify(f"queue: {counts}", markup=False)
        self.refresh_items()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker: Worker[Any] = event.worker
        if event.state == WorkerState.ERROR:
            self.running = False
            self.query_one(StatusLine).idle()
            assert worker.error is not None
            self.session.show_failure(worker.error, "queue")
            self.refresh_items()
