"""The prompt line. Enter generates (the screen handles `Input.Submitted`); up and down walk
through earlier prompts, as in a shell, keeping what was being typed as the newest entry."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    """An `Input` with a prompt history."""

    BINDING_GROUP_TITLE = "Prompt (focused)"
    BINDINGS = [
        Binding("up", "history(-1)", "Earlier prompt", show=False, id="prompt.earlier"),
        Binding("down", "history(1)", "Later prompt", show=False, id="prompt.later"),
    ]

    def __init__(self, history: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: list[str] = list(history or [])
        self._index = len(self.history)
        self._draft = ""

    def remember(self, prompt: str) -> None:
        """Make `prompt` the newest history entry and reset the walk to the end."""
        prompt = prompt.strip()
        if prompt:
            self.history = [p for p in self.history if p != prompt] + [prompt]
        self._index = len(self.history)

    def action_history(self, direction: int) -> None:
        if not self.history:
            return
        if self._index == len(self.history):
            self._draft = self.value
        index = max(0, min(len(self.history), self._index + direction))
        if index == self._index:
            return
        self._index = index
        self.value = self._draft if index == len(self.history) else self.history[index]
        self.cursor_position = len(self.value)
