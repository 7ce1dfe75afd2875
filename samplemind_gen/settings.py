"""What the app remembers between sessions: the last model, the generation parameters, the
export folder/format/template and the prompt history, in `settings.toml` under the config folder.

A missing, unreadable or half-edited file never stops the app: bad values fall back to their
defaults one by one. Writes are atomic (temp file in the same folder, then rename), so a crash
mid-save leaves the previous file intact.
"""

from __future__ import annotations

import logging
import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from samplemind_gen import paths

log = logging.getLogger(__name__)

HISTORY_MAX = 100


@dataclass
class Settings:
    """The remembered state. `None` means "not set": the core default applies."""

    model: str | None = None
    duration: float = 8.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float | None = None
    guidance_scale: float = 3.0
    seed: int | None = None
    seed_locked: bool = False
    steps: int | None = None
    negative_prompt: str = ""
    export_folder: str | None = None
    export_format: str = "wav24"
    filename_template: str = "{prompt_slug}_{seed}"
    prompt_history: list[str] = field(default_factory=list)
    play_while_generating: bool = True
    quantize: str | None = None  # MusicGen on CPU: "int8" or "int4" (None: the dtype default)

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """Read `path` (default: the config folder's settings.toml); defaults for anything bad."""
        path = path or paths.settings_file()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            log.warning("ignoring unreadable settings file %s: %s", path, exc)
            return cls()
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        settings = cls()
        defaults = asdict(settings)
        for f in fields(cls):
            if f.name not in data:
                continue
            value = _coerce(data[f.name], defaults[f.name], f.name)
            if value is not _INVALID:
                setattr(settings, f.name, value)
        return settings

    def to_dict(self) -> dict[str, Any]:
        """TOML has no null: unset values are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def save(self, path: Path | None = None) -> Path:
        """Write atomically; returns the path written."""
        import tomli_w

        path = path or paths.settings_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = tomli_w.dumps(self.to_dict())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def remember_prompt(self, prompt: str) -> None:
        """Add `prompt` as the newest history entry (once; blanks are not kept)."""
        prompt = prompt.strip()
        if not prompt:
            return
        history = [p for p in self.prompt_history if p != prompt]
        history.append(prompt)
        self.prompt_history = history[-HISTORY_MAX:]


_INVALID = object()
# Fields whose default is None, and the type a set value must have.
_OPTIONAL_TYPES: dict[str, type] = {
    "model": str,
    "top_p": float,
    "seed": int,
    "steps": int,
    "export_folder": str,
    "quantize": str,
}


def _coerce(value: Any, default: Any, name: str) -> Any:
    expected = _OPTIONAL_TYPES.get(name) if default is None else type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value[-HISTORY_MAX:]
    elif expected is not None and isinstance(value, expected):
        if expected is int and isinstance(value, bool):
            return _INVALID
        return value
    log.warning(
        "ignoring setting %s = %r (expected %s)",
        name,
        value,
        getattr(expected, "__name__", expected),
    )
    return _INVALID
