"""The session's takes, one row each: prompt, seed, length, key, tempo and loudness."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from samplemind_gen.take import Take

COLUMNS = ("#", "prompt", "seed", "len", "key", "BPM", "LUFS")


def take_row(number: int, take: Take) -> tuple[str, ...]:
    f = take.features
    key = f.key_label if f is not None and f.key_label else "-"
    bpm = f"{f.tempo_bpm:.0f}" if f is not None and f.tempo_bpm else "-"
    lufs = f"{f.lufs:.1f}" if f is not None and f.lufs is not None else "-"
    return (str(number), take.prompt, str(take.seed), f"{take.duration:.1f}s", key, bpm, lufs)


class TakeList(DataTable[str]):
    """Up/down or j/k move between takes, space plays or stops the highlighted one."""

    BINDING_GROUP_TITLE = "Take list (focused)"
    BINDINGS = [
        Binding("j", "cursor_down", "Next take", show=False, id="take.next"),
        Binding("k", "cursor_up", "Previous take", show=False, id="take.previous"),
        Binding("space", "screen.toggle_play", "Play", id="take.play"),
        Binding("slash", "screen.focus_prompt", "Back to the prompt", show=False, id="take.prompt"),
    ]

    class TakeHighlighted(Message):
        """The highlighted take changed."""

        def __init__(self, take: Take) -> None:
            super().__init__()
            self.take = take

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.takes: dict[str, Take] = {}

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def add_takes(self, takes: list[Take]) -> None:
        """Append `takes` and highlight the first of them."""
        first_row = self.row_count
        for take in takes:
            self.takes[take.id] = take
            self.add_row(*take_row(len(self.takes), take), key=take.id)
        if takes:
            self.move_cursor(row=first_row)

    @property
    def selected(self) -> Take | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self.takes.get(str(row_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        take = self.takes.get(str(event.row_key.value))
        if take is not None:
            self.post_message(self.TakeHighlighted(take))
