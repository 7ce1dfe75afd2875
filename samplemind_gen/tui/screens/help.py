"""F1 help: every key of the screen underneath, generated from the bindings themselves, so it
can never fall out of step with what the keys do."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label

from samplemind_gen.tui.keys import own_bindings


def help_rows(app: App[object], screen: Screen[object]) -> list[tuple[str, str, str]]:
    """(where, key, what) for the app, `screen` and every widget on it, once each."""
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[type, str]] = set()
    for node in [screen, *screen.query("*"), app]:
        for cls, binding in own_bindings(node):
            if (cls, binding.key) in seen:
                continue
            seen.add((cls, binding.key))
            where = getattr(cls, "BINDING_GROUP_TITLE", None) or cls.__name__
            rows.append((where, app.get_key_display(binding), binding.description))
    if app.ENABLE_COMMAND_PALETTE:
        palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette")
        rows.append(("Anywhere", app.get_key_display(palette), "Command palette"))
    return rows


class HelpScreen(ModalScreen[None]):
    """Lists the keys of `screen` (the one F1 was pressed on)."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="help.close")]

    def __init__(self, screen: Screen[object]) -> None:
        super().__init__()
        self.target = screen

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Keys", id="dialog-title")
            yield DataTable(id="keys", cursor_type="row", show_cursor=False)
            yield Label("Escape or F1 closes this", classes="dialog-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("where", "key", "what it does")
        for row in help_rows(self.app, self.target):
            table.add_row(*row)
        table.focus()
