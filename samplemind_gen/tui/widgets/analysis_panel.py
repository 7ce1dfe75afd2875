"""What the analyser measured on the selected take, in the same words as `samplemind-gen analyze`."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from samplemind_gen.cli.analyze import format_features
from samplemind_gen.take import Take


def describe_take(take: Take) -> str:
    lines = [
        f"{'seed':>12}  {take.seed}",
        f"{'model':>12}  {take.recipe.model}",
    ]
    if take.features is not None:
        lines.append(format_features(take.features.to_dict()))
    else:
        lines.append(f"{'analysis':>12}  -")
    total = take.timings.get("total")
    if total is not None:
        lines.append(f"{'made in':>12}  {total:.1f} s")
    if take.path is not None:
        lines.append(f"{'exported':>12}  {take.path}")
    lines.extend(f"note: {note}" for note in take.notes)
    return "\n".join(lines)


class AnalysisPanel(Static):
    """Shows the `AudioFeatures` of one take (or a hint when there is none)."""

    def show(self, take: Take | None) -> None:
        self.update(Text(describe_take(take) if take is not None else "no take selected"))
