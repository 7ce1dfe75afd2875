"""The generation parameters: duration, seed (random unless locked), sampling and guidance, and
for diffusion models only, steps and a negative prompt."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label

from samplemind_gen.errors import BadInputError
from samplemind_gen.request import GenerationRequest
from samplemind_gen.settings import Settings

N = TypeVar("N", int, float)


def _row(label: str, *widgets: Input | Checkbox, classes: str = "") -> Horizontal:
    return Horizontal(Label(label, classes="param-label"), *widgets, classes=f"param-row {classes}")


class ParamsPanel(Vertical):
    """Reads a `GenerationRequest` out of its fields; `-diffusion` shows the diffusion-only ones."""

    def compose(self) -> ComposeResult:
        yield _row("duration s", Input(id="duration", compact=True, type="number"))
        yield _row(
            "seed",
            Input(id="seed", compact=True, type="integer", placeholder="random"),
            Checkbox("lock", id="seed-lock", compact=True),
        )
        yield _row("temperature", Input(id="temperature", compact=True, type="number"))
        yield _row("top-k", Input(id="top-k", compact=True, type="integer", placeholder="0 = off"))
        yield _row("top-p", Input(id="top-p", compact=True, type="number", placeholder="off"))
        yield _row("guidance", Input(id="guidance", compact=True, type="number"))
        yield _row(
            "steps",
            Input(id="steps", compact=True, type="integer", placeholder="default"),
            classes="diffusion",
        )
        yield _row(
            "negative",
            Input(id="negative", compact=True, placeholder="what to avoid"),
            classes="diffusion",
        )

    def set_diffusion(self, diffusion: bool) -> None:
        self.set_class(diffusion, "-diffusion")

    def _input(self, name: str) -> Input:
        return self.query_one(f"#{name}", Input)

    def _set(self, name: str, value: object) -> None:
        self._input(name).value = "" if value is None else f"{value}"

    @property
    def seed_locked(self) -> bool:
        return self.query_one("#seed-lock", Checkbox).value

    def load(self, settings: Settings) -> None:
        self._set("duration", f"{settings.duration:g}")
        self._set("seed", settings.seed)
        self.query_one("#seed-lock", Checkbox).value = settings.seed_locked
        self._set("temperature", f"{settings.temperature:g}")
        self._set("top-k", settings.top_k)
        self._set("top-p", settings.top_p)
        self._set("guidance", f"{settings.guidance_scale:g}")
        self._set("steps", settings.steps)
        self._set("negative", settings.negative_prompt)

    def store(self, request: GenerationRequest, settings: Settings) -> None:
        """Copy the parameters of `request` (as generated) into `settings`."""
        settings.duration = request.duration
        settings.temperature = request.temperature
        settings.top_k = request.top_k
        settings.top_p = request.top_p
        settings.guidance_scale = request.guidance_scale
        settings.steps = request.steps
        settings.negative_prompt = request.negative_prompt or ""
        settings.seed = request.seed
        settings.seed_locked = self.seed_locked

    def show_seed(self, seed: int) -> None:
        self._set("seed", seed)

    def request(self, prompt: str, *, new_seed: bool = False) -> GenerationRequest:
        """The request these fields describe. A locked seed is kept unless `new_seed`; an
        unlocked one is random. Raises `BadInputError` naming the field to fix."""
        seed = None
        if self.seed_locked and not new_seed:
            seed = self._optional("seed", int)
        return GenerationRequest(
            prompt=prompt,
            duration=self._required("duration", float),
            temperature=self._required("temperature", float),
            top_k=self._optional("top-k", int) or 0,
            top_p=self._optional("top-p", float),
            guidance_scale=self._required("guidance", float),
            seed=seed,
            steps=self._optional("steps", int) if self.has_class("-diffusion") else None,
            negative_prompt=(self._input("negative").value.strip() or None)
            if self.has_class("-diffusion")
            else None,
        ).resolved()

    def _optional(self, name: str, cast: Callable[[str], N]) -> N | None:
        text = self._input(name).value.strip()
        if not text:
            return None
        try:
            return cast(text)
        except ValueError:
            raise BadInputError(f"{name} must be a number (got {text!r})") from None

    def _required(self, name: str, cast: Callable[[str], N]) -> N:
        value = self._optional(name, cast)
        if value is None:
            raise BadInputError(f"{name} is empty; type a number")
        return value
