"""The command palette (ctrl+p) offers the current screen's key actions by name, only those
that apply right now (the same `check_action` test the footer uses)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from samplemind_gen.tui.keys import own_bindings


def screen_commands(screen: Screen[object]) -> Iterator[tuple[str, str, str]]:
    """(name, key, action) for each described binding of `screen` and its widgets that is
    available now, with the action namespaced for `run_action` on the screen."""
    seen: set[str] = set()
    for node in [screen, *screen.query("*")]:
        for _cls, binding in own_bindings(node):
            action = binding.action
            if action.startswith("screen."):
                action = action.removeprefix("screen.")
            elif node is not screen:
                continue  # a widget's own action (cursor moves) means nothing from the palette
            name = action.split("(", 1)[0]
            if name in seen or screen.check_action(name, ()) is not True:
                continue
            seen.add(name)
            key = screen.app.get_key_display(binding)
            yield binding.description, key, action


class ScreenCommands(Provider):
    """Palette commands for the active screen's actions."""

    def _hits(self) -> Iterator[tuple[str, str, Callable[[], Awaitable[None]]]]:
        screen = self.screen
        for name, key, action in screen_commands(screen):
            yield name, f"key: {key}", partial(screen.run_action, action)

    async def discover(self) -> Hits:
        for name, help_text, callback in self._hits():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._hits():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
