"""A take's recipe: everything needed to make it again, stored in the library and embedded in
every exported file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from samplemind_gen import __version__


@dataclass(frozen=True)
class Recipe:
    prompt: str
    model: str
    revision: str | None
    family: str
    seed: int
    params: dict[str, Any]
    device: str
    dtype: str
    sample_rate: int
    channels: int
    duration: float
    app_version: str = __version__
    # Which kernels made it ("samplemind avx512vnni+amx", "onednn", "pytorch", ...): they round
    # differently, so the same recipe on another CPU can give a different take. "" in recipes
    # from before it was recorded.
    kernels: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
