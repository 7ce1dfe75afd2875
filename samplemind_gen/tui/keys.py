"""Reading our own key bindings back, for the F1 help and the command palette."""

from __future__ import annotations

from collections.abc import Iterator

from textual.binding import Binding
from textual.dom import DOMNode

PACKAGE = "samplemind_gen."


def own_bindings(node: DOMNode) -> Iterator[tuple[type, Binding]]:
    """The described bindings that our classes (not Textual's) declare on `node`."""
    for cls in type(node).__mro__:
        if not cls.__module__.startswith(PACKAGE):
            continue
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding) and binding.description:
                yield cls, binding
