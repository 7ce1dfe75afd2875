"""`SampleMindApp`: the session (service, player, settings) and the one place that decides how a
failure is shown. The screens do the rest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from samplemind_gen import paths
from samplemind_gen.catalog import DEFAULT_MODEL
from samplemind_gen.errors import (
    BadInputError,
    GenerationCancelled,
    NoAudioDeviceError,
    SampleMindError,
)
from samplemind_gen.playback import Player
from samplemind_gen.service import AudioEngineWithGeneration
from samplemind_gen.settings import Settings
from samplemind_gen.tui.commands import ScreenCommands
from samplemind_gen.tui.screens.error import ErrorScreen
from samplemind_gen.tui.screens.generate import GenerateScreen

log = logging.getLogger(__name__)

# Failures that only deserve a toast: the user did it (cancel, a bad field) or it changes
# nothing else (no audio device). Everything else (missing or damaged model, out of memory,
# unwritable folder, a bug) stops in an error dialog.
TOAST_FAILURES: tuple[type[BaseException], ...] = (GenerationCancelled, NoAudioDeviceError)


def is_toast(error: BaseException) -> bool:
    # A plain BadInputError is a parameter the user can fix in place; its subclasses (unknown
    # model, damaged files, not downloaded, unwritable folder) need reading.
    return isinstance(error, TOAST_FAILURES) or type(error) is BadInputError


def failure_message(error: BaseException) -> str:
    if isinstance(error, SampleMindError):
        return str(error)
    text = str(error).strip()
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return (
            "out of memory: pick a smaller model (F2), generate a shorter take, or close other "
            f"programs ({type(error).__name__}: {text or 'no details'})"
        )
    first = text.splitlines()[0] if text else "no details"
    return f"unexpected {type(error).__name__}: {first}"


@contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Send root log records to `path` while the app owns the terminal: a handler set up before
    (the CLI's, on the real stderr) would draw over the screen."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler: logging.Handler
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


class SampleMindApp(App[None]):
    """The terminal app. `model` (catalog name, Hub id or folder) overrides the last one used."""

    CSS_PATH = "app.tcss"
    TITLE = "samplemind-gen"
    COMMANDS = App.COMMANDS | {ScreenCommands}
    BINDING_GROUP_TITLE = "Anywhere"
    BINDINGS = [
        Binding("f1", "help", "Help", id="help"),
        Binding("f3", "library", "Library", id="library"),
        Binding("f4", "queue", "Queue", id="queue"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        model: str | None = None,
        *,
        service: AudioEngineWithGeneration | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings if settings is not None else Settings.load()
        self.model = model or self.settings.model or DEFAULT_MODEL
        if service is None:
            from samplemind_gen.devices import QUANTIZE_MODES
            from samplemind_gen.engines.base import LoadOptions

            quantize = self.settings.quantize
            options = LoadOptions(quantize=quantize if quantize in QUANTIZE_MODES else None)
            service = AudioEngineWithGeneration(options)
        self.service = service
        self.player = Player()

    def run(self, *args: Any, **kwargs: Any) -> None:
        with logging_to(paths.data_dir() / "tui.log"):
            return super().run(*args, **kwargs)

    def get_default_screen(self) -> Screen[None]:
        return GenerateScreen()

    def action_help(self) -> None:
        from samplemind_gen.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_library(self) -> None:
        from samplemind_gen.tui.screens.library import LibraryScreen

        self._toggle_screen(LibraryScreen)

    def action_queue(self) -> None:
        from samplemind_gen.tui.screens.queue import QueueScreen

        self._toggle_screen(QueueScreen)

    def _toggle_screen(self, kind: type[Screen[None]]) -> None:
        """Open `kind` on top of the current screen, or close it if it is the current one."""
        if isinstance(self.screen, kind):
            self.pop_screen()
        elif not isinstance(self.screen, ModalScreen):
            self.push_screen(kind())

    def show_failure(self, error: BaseException, what: str = "error") -> None:
        """Toast or error dialog for `error`, by the policy above. Never raises."""
        message = failure_message(error)
        if is_toast(error):
            if isinstance(error, GenerationCancelled):
                self.notify(message, markup=False)
            else:
                self.notify(message, title=what, severity="warning", markup=False)
            return
        if not isinstance(error, SampleMindError):
            log.error("%s", what, exc_info=error)
        self.push_screen(ErrorScreen(what, message))

    def save_settings(self) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            self.notify(f"settings not saved: {exc}", severity="warning", markup=False)

    def on_unmount(self) -> None:
        self.player.stop()
