"""A failure worth stopping for: what went wrong and what to do next, dismissed with Enter or
Escape. The app keeps running underneath."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class ErrorScreen(ModalScreen[None]):
    """Shows `message` under `title`."""

    BINDINGS = [
        Binding("escape,enter", "dismiss", "Close", id="error.close"),
    ]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.title_text), id="dialog-title")
            yield Static(Text(self.message), id="error-message")
            yield Label("Enter or Escape closes this", classes="dialog-hint")
