"""The model catalog: what each supported checkpoint is, what it costs and how to find it.

`resolve_model` turns whatever the user typed for `--model` (a catalog name, a Hub repo id, or a
local folder holding a Hugging Face checkpoint) into a `ModelSpec` plus, for folders, its path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from samplemind_gen.errors import ModelFilesError, UnknownModelError

Family = Literal["musicgen", "audioldm", "audioldm2", "stable-audio"]
Kind = Literal["music", "sfx"]

GB = 1024**3
MUSICGEN_LICENCE = "CC-BY-NC-4.0"
AUDIOLDM_LICENCE = "CC-BY-NC-SA-4.0"
STABLE_AUDIO_LICENCE = "Stability AI Community License"

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint the app knows how to run."""

    name: str
    repo_id: str
    family: Family
    kind: Kind
    params: int
    download_bytes: int
    sample_rate: int
    channels: int
    max_duration: float
    licence: str
    description: str = ""
    revision: str | None = None
    gated: bool = False
    melody: bool = False

    @property
    def is_diffusion(self) -> bool:
        return self.family != "musicgen"

    def memory_bytes(self, dtype: str = "float32") -> int:
        """Memory needed to hold the weights in `dtype`, plus activations and runtime overhead."""
        weights = self.params * DTYPE_BYTES.get(dtype, 4)
        return int(weights * 1.2 + 0.5 * GB)

    @property
    def size_label(self) -> str:
        return f"{self.download_bytes / GB:.1f} GB"


def _musicgen(
    name: str, params: float, download_gb: float, channels: int = 1, melody: bool = False
) -> ModelSpec:
    size = name.rsplit("-", 1)[-1]
    stereo = "stereo " if channels == 2 else ""
    return ModelSpec(
        name=name,
        repo_id=f"facebook/{name}",
        family="musicgen",
        kind="music",
        params=int(params * 1e9),
        download_bytes=int(download_gb * GB),
        sample_rate=32000,
        channels=channels,
        max_duration=30.0,
        licence=MUSICGEN_LICENCE,
        description=(
            f"MusicGen {size} ({stereo}text{' + melody' if melody else ''} to music, 32 kHz)"
        ),
        melody=melody,
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        _musicgen("musicgen-small", 0.59, 2.2),
        _musicgen("musicgen-medium", 1.84, 6.8),
        _musicgen("musicgen-large", 3.68, 13.7),
        _musicgen("musicgen-melody", 1.84, 6.8, melody=True),
        _musicgen("musicgen-stereo-small", 0.59, 2.2, channels=2),
        _musicgen("musicgen-stereo-medium", 1.84, 6.8, channels=2),
        _musicgen("musicgen-stereo-large", 3.68, 13.7, channels=2),
        ModelSpec(
            name="audioldm-s-full-v2",
            repo_id="cvssp/audioldm-s-full-v2",
            family="audioldm",
            kind="sfx",
            params=int(0.42e9),
            download_bytes=int(1.1 * GB),
            sample_rate=16000,
            channels=1,
            max_duration=30.0,
            licence=AUDIOLDM_LICENCE,
            description="AudioLDM small (sound effects and textures, 16 kHz)",
        ),
        ModelSpec(
            name="audioldm2",
            repo_id="cvssp/audioldm2",
            family="audioldm2",
            kind="sfx",
            params=int(1.1e9),
            download_bytes=int(4.4 * GB),
            sample_rate=16000,
            channels=1,
            max_duration=30.0,
            licence=AUDIOLDM_LICENCE,
            description="AudioLDM 2 (general sound effects, 16 kHz)",
        ),
        ModelSpec(
            name="audioldm2-music",
            repo_id="cvssp/audioldm2-music",
            family="audioldm2",
            kind="music",
            params=int(1.1e9),
            download_bytes=int(4.4 * GB),
            sample_rate=16000,
            channels=1,
            max_duration=30.0,
            licence=AUDIOLDM_LICENCE,
            description="AudioLDM 2 music (music textures, 16 kHz)",
        ),
        ModelSpec(
            name="audioldm2-large",
            repo_id="cvssp/audioldm2-large",
            family="audioldm2",
            kind="sfx",
            params=int(1.5e9),
            download_bytes=int(6.2 * GB),
            sample_rate=16000,
            channels=1,
            max_duration=30.0,
            licence=AUDIOLDM_LICENCE,
            description="AudioLDM 2 large (sound effects, 16 kHz)",
        ),
        ModelSpec(
            name="stable-audio-open-1.0",
            repo_id="stabilityai/stable-audio-open-1.0",
            family="stable-audio",
            kind="sfx",
            params=int(1.2e9),
            download_bytes=int(4.9 * GB),
            sample_rate=44100,
            channels=2,
            max_duration=47.0,
            licence=STABLE_AUDIO_LICENCE,
            description="Stable Audio Open 1.0 (44.1 kHz stereo samples and loops; gated)",
            gated=True,
        ),
    ]
}

DEFAULT_MODEL = "musicgen-small"


@dataclass(frozen=True)
class ResolvedModel:
    """A model the user asked for: its spec, and the local folder when it is one."""

    spec: ModelSpec
    local_path: Path | None = None

    @property
    def display_name(self) -> str:
        return str(self.local_path) if self.local_path else self.spec.name


_PIPELINE_FAMILIES: dict[str, Family] = {
    "AudioLDMPipeline": "audioldm",
    "AudioLDM2Pipeline": "audioldm2",
    "StableAudioPipeline": "stable-audio",
}


def spec_from_folder(path: Path, name: str | None = None) -> ModelSpec:
    """Build a spec for a local Hugging Face checkpoint from its `config.json`/`model_index.json`."""
    name = name or path.name
    index = path / "model_index.json"
    config = path / "config.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFilesError(
                f"{index} is not valid JSON ({exc}); re-download the model"
            ) from exc
        family = _PIPELINE_FAMILIES.get(str(data.get("_class_name")))
        if family is None:
            raise ModelFilesError(
                f"{path} holds a {data.get('_class_name')} pipeline; supported are "
                + ", ".join(_PIPELINE_FAMILIES)
            )
        base = next(s for s in CATALOG.values() if s.family == family)
        return replace(
            base,
            name=name,
            repo_id=str(path),
            params=0,
            download_bytes=_folder_bytes(path),
            description=f"local {family} pipeline",
            gated=False,
        )
    if config.is_file():
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFilesError(
                f"{config} is not valid JSON ({exc}); re-download the model"
            ) from exc
        model_type = str(data.get("model_type", ""))
        if model_type not in ("musicgen", "musicgen_melody"):
            raise ModelFilesError(
                f"{path} holds a '{model_type or 'unknown'}' model; expected a MusicGen checkpoint "
                "(config.json with model_type 'musicgen') or a diffusers audio pipeline"
            )
        decoder = data.get("decoder", {})
        audio = data.get("audio_encoder", {})
        return ModelSpec(
            name=name,
            repo_id=str(path),
            family="musicgen",
            kind="music",
            params=0,
            download_bytes=_folder_bytes(path),
            sample_rate=int(audio.get("sampling_rate", 32000)),
            channels=int(decoder.get("audio_channels", 1)),
            max_duration=30.0,
            licence=MUSICGEN_LICENCE,
            description="local MusicGen checkpoint",
            melody=model_type == "musicgen_melody",
        )
    raise ModelFilesError(
        f"{path} has no config.json or model_index.json; point --model at a Hugging Face "
        "checkpoint folder"
    )


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def resolve_model(name: str) -> ResolvedModel:
    """Resolve a catalog name, Hub repo id (`owner/name`) or local folder."""
    name = name.strip()
    if not name:
        raise UnknownModelError("no model given; pick one from `samplemind-gen models list`")
    if name in CATALOG:
        return ResolvedModel(CATALOG[name])
    for spec in CATALOG.values():
        if spec.repo_id == name:
            return ResolvedModel(spec)
    from samplemind_gen.store.importer import imported_model  # lazy: the store imports us

    imported = imported_model(name)
    if imported is not None:
        return ResolvedModel(spec_from_folder(imported.path, name), imported.path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFilesError(f"{path} is a file; --model takes a checkpoint folder")
        return ResolvedModel(spec_from_folder(path.resolve()), path.resolve())
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        family: Family = "musicgen"
        lowered = name.lower()
        if "audioldm2" in lowered:
            family = "audioldm2"
        elif "audioldm" in lowered:
            family = "audioldm"
        elif "stable-audio" in lowered:
            family = "stable-audio"
        base = next(s for s in CATALOG.values() if s.family == family)
        return ResolvedModel(
            replace(base, name=name, repo_id=name, description=f"Hub model {name}", gated=False)
        )
    close = [n for n in CATALOG if name.lower() in n or n in name.lower()]
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UnknownModelError(
        f"unknown model '{name}'{hint}; use a name from `samplemind-gen models list`, a Hub repo id "
        "like facebook/musicgen-small, or a local checkpoint folder"
    )
