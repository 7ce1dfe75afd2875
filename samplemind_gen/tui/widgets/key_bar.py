"""The keys that apply right now, on one line at the bottom (the screen's active bindings: the
ones `check_action` hides are left out, the ones it disables are dimmed).

Textual's `Footer` rebuilds one widget per key whenever the bindings change, which took 35-130 ms
of UI thread on a busy 2-core machine each time a generation started or ended, enough to stall
the event loop past 100 ms. This redraws a single line of text instead."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget):
    """A one-line, keyboard-only footer."""

    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--disabled"}
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $panel; }
    KeyBar > .key-bar--key { color: $accent; text-style: bold; }
    KeyBar > .key-bar--description { color: $foreground; }
    KeyBar > .key-bar--disabled { color: $text-disabled; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, _screen: Screen[object]) -> None:
        self.refresh()

    def _entry(self, binding: Binding, enabled: bool) -> Text:
        key_style = self.get_component_rich_style("key-bar--key")
        text_style = self.get_component_rich_style("key-bar--description")
        if not enabled:
            key_style = text_style = self.get_component_rich_style("key-bar--disabled")
        entry = Text(" ")
        entry.append(self.app.get_key_display(binding), key_style)
        entry.append(f" {binding.description} ", text_style)
        return entry

    def render(self) -> Text:
        active = self.screen.active_bindings
        palette_key = self.app.COMMAND_PALETTE_BINDING
        line = Text(no_wrap=True, overflow="crop", style=Style())
        actions: set[str] = set()
        for key, (_node, binding, enabled, _tooltip) in active.items():
            if not binding.show or binding.action in actions or key == palette_key:
                continue
            actions.add(binding.action)
            line.append_text(self._entry(binding, enabled))
        if palette_key in active and self.app.ENABLE_COMMAND_PALETTE:
            _node, binding, enabled, _tooltip = active[palette_key]
            palette = self._entry(Binding(binding.key, binding.action, "palette"), enabled)
            gap = self.size.width - line.cell_len - palette.cell_len
            if gap > 0:
                line.append(" " * gap)
                line.append_text(palette)
        return line
