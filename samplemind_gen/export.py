"""Write a take to WAV, FLAC or Ogg Vorbis with its recipe embedded in the file itself.

Every export is atomic: the audio goes to a hidden temp file in the target folder, is fsynced,
and only then renamed over the final name, so a crash, a full disk or a cancelled export never
leaves a half-written sample where a DAW might pick it up.

What is embedded (read it back with `read_recipe`):

- WAV: a `LIST`/`INFO` chunk (INAM = prompt, ISFT = "samplemind-gen <version>", ICRD = date,
  ICMT = the recipe as JSON) and an `iXML` chunk whose `<SAMPLEMIND_GEN>` element holds the
  recipe and the analysed features as JSON.
- FLAC / Ogg Vorbis: Vorbis comments TITLE, COMMENT, DATE, ENCODER, BPM, INITIALKEY, plus
  SAMPLEMIND_RECIPE and SAMPLEMIND_FEATURES (JSON), written with mutagen.

A JSON sidecar `<file>.json` (e.g. `kick.wav.json`) with the same envelope is written next to
the audio unless `sidecar=False`.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import os
import re
import secrets
import shutil
import string
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

import numpy as np

from samplemind_gen import __version__, riff
from samplemind_gen.analysis import AudioFeatures
from samplemind_gen.errors import BadInputError, DiskFullError, OutputNotWritableError
from samplemind_gen.recipe import Recipe

APP = "samplemind-gen"
ENVELOPE_FORMAT = "samplemind-gen/1"
RECIPE_TAG = "SAMPLEMIND_RECIPE"
FEATURES_TAG = "SAMPLEMIND_FEATURES"
IXML_ELEMENT = "SAMPLEMIND_GEN"
BLOCK_FRAMES = 65536  # write in blocks: libsndfile's Vorbis encoder dislikes huge writes


class FormatSpec(NamedTuple):
    """An export format: file extension, soundfile container and sample subtype."""

    extension: str
    container: str
    subtype: str


FORMATS: dict[str, FormatSpec] = {
    "wav16": FormatSpec(".wav", "WAV", "PCM_16"),
    "wav24": FormatSpec(".wav", "WAV", "PCM_24"),
    "wav32f": FormatSpec(".wav", "WAV", "FLOAT"),
    "flac": FormatSpec(".flac", "FLAC", "PCM_24"),
    "ogg": FormatSpec(".ogg", "OGG", "VORBIS"),
}
DEFAULT_FORMAT = "wav24"
# Upper bounds for the free-space check (FLAC and Vorbis compress below these).
BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4, "VORBIS": 1}

ALIASES = {
    "wav": "wav24",
    "wave": "wav24",
    "pcm16": "wav16",
    "wav16bit": "wav16",
    "pcm24": "wav24",
    "wav24bit": "wav24",
    "wav32": "wav32f",
    "wavfloat": "wav32f",
    "float": "wav32f",
    "float32": "wav32f",
    "fla": "flac",
    "vorbis": "ogg",
    "oga": "ogg",
}
EXTENSIONS = {".wav": "wav24", ".wave": "wav24", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg"}

TEMPLATE_FIELDS = ("prompt_slug", "seed", "model", "date", "time", "bpm", "key")
DEFAULT_TEMPLATE = "{prompt_slug}_{seed}"
SLUG_MAX = 48
STEM_MAX = 120
# Names Windows refuses whatever the extension; exports must open on every producer's machine.
RESERVED_STEMS = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in "123456789"
}


# --- formats -------------------------------------------------------------------------------


def parse_format(name: str) -> str:
    """The canonical format name for what a user typed: "wav" -> "wav24", "FLAC" -> "flac"."""
    key = re.sub(r"[\s._-]", "", str(name).lower())
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        choices = ", ".join(FORMATS)
        raise BadInputError(f"unknown export format {name!r}; choose one of {choices} (or 'wav')")
    return key


def format_from_path(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for: .wav -> wav24, .flac -> flac, .ogg -> ogg."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise BadInputError(
            f"cannot tell the export format from {os.fspath(path)!r}; "
            "end the name in .wav, .flac or .ogg, or pass a format"
        )
    return EXTENSIONS[suffix]


# --- export --------------------------------------------------------------------------------


def export_take(
    audio: np.ndarray,
    sample_rate: int,
    path: str | os.PathLike[str],
    *,
    recipe: Recipe | Mapping[str, Any],
    features: AudioFeatures | Mapping[str, Any] | None = None,
    fmt: str | None = None,
    sidecar: bool = True,
) -> Path:
    """Write `audio` (float, shaped (channels, samples) or 1-D mono) to `path` atomically, with
    the recipe and features embedded, and return the path written.

    The format is `fmt` if given, else taken from the file extension; a path without an
    extension gets the format's. The folder is created if needed. Raises `BadInputError` for
    bad audio or formats, `OutputNotWritableError` when the folder or file cannot be written and
    `DiskFullError` when the disk is full; in every failure no new file is left behind.
    """
    name = parse_format(fmt) if fmt is not None else format_from_path(path)
    spec = FORMATS[name]
    target = _target_path(Path(path), name)
    data = _frames(audio, spec)
    sr = _sample_rate(sample_rate)
    envelope = build_envelope(recipe, features)
    folder = target.parent
    _ensure_folder(folder)
    if target.is_dir():
        raise OutputNotWritableError(f"{target} is a folder; choose a file name for the export")
    side = sidecar_path(target)
    _check_space(folder, data.shape[0] * data.shape[1] * BYTES_PER_SAMPLE[spec.subtype] + 1_000_000)

    temps: list[Path] = []
    published: list[Path] = []
    try:
        tmp_audio = _reserve_temp(target)
        temps.append(tmp_audio)
        _write_audio(tmp_audio, data, sr, spec)
        _embed(tmp_audio, name, envelope)
        _fsync(tmp_audio)
        tmp_side = None
        if sidecar:
            tmp_side = _reserve_temp(side)
            temps.append(tmp_side)
            payload = dict(envelope, file=target.name, format_name=name)
            tmp_side.write_text(json.dumps(payload, ensure_ascii=False, indent=2), "utf-8")
            _fsync(tmp_side)
        os.replace(tmp_audio, target)
        temps.remove(tmp_audio)
        published.append(target)
        if tmp_side is not None:
            os.replace(tmp_side, side)
            temps.remove(tmp_side)
            published.append(side)
    except BaseException as exc:
        # Half an export is worse than none: remove whatever this call created.
        for p in temps + published:
            with contextlib.suppress(OSError):
                p.unlink()
        translated = _translate(exc, target, folder)
        if translated is exc:
            raise
        raise translated from exc
    _fsync_dir(folder)
    return target


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the JSON sidecar of an exported file lives: `kick.wav` -> `kick.wav.json`."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def build_envelope(
    recipe: Recipe | Mapping[str, Any], features: AudioFeatures | Mapping[str, Any] | None
) -> dict[str, Any]:
    """What gets embedded: {"format", "app_version", "recipe", "features"} as plain JSON."""
    recipe_dict = recipe.to_dict() if isinstance(recipe, Recipe) else dict(recipe)
    if isinstance(features, AudioFeatures):
        features_dict: dict[str, Any] | None = features.to_dict()
    else:
        features_dict = dict(features) if features is not None else None
    envelope = {
        "format": ENVELOPE_FORMAT,
        "app_version": __version__,
        "recipe": recipe_dict,
        "features": features_dict,
    }
    # Fail before touching the disk if something in there is not JSON (or is NaN).
    try:
        json.dumps(envelope, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"the recipe or features cannot be stored as JSON: {exc}") from exc
    return envelope


# --- reading back --------------------------------------------------------------------------


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The envelope embedded in an exported file (not its sidecar):
    {"format", "app_version", "recipe": {...}, "features": {...} or None}.

    Raises `BadInputError` when the file is missing, unreadable or carries no recipe.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise BadInputError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        if magic == b"RIFF":
            envelope = _read_wav(p)
        elif magic in (b"fLaC", b"OggS"):
            envelope = _read_vorbis_comments(p, magic)
        else:
            raise BadInputError(f"{p} is not a WAV, FLAC or Ogg file")
    except BadInputError:
        raise
    except Exception as exc:  # corrupt chunks, bad XML/JSON, mutagen errors
        raise BadInputError(f"cannot read the recipe in {p}: {exc}") from exc
    if envelope is None:
        raise BadInputError(f"{p} has no samplemind-gen recipe embedded")
    return envelope


def _read_wav(path: Path) -> dict[str, Any] | None:
    ixml = riff.find_chunk(path, b"iXML")
    if ixml is not None:
        from xml.etree import ElementTree

        root = ElementTree.fromstring(ixml.rstrip(b"\x00"))
        node = root.find(IXML_ELEMENT)
        if node is not None and node.text:
            return dict(json.loads(node.text))
    info = riff.find_chunk(path, b"LIST", b"INFO")
    if info is not None:
        comment = riff.decode_info(info).get("ICMT")
        if comment:
            recipe = json.loads(comment)
            if isinstance(recipe, dict):
                return _envelope_from_parts(recipe, None)
    return None


def _read_vorbis_comments(path: Path, magic: bytes) -> dict[str, Any] | None:
    tags = _open_tags(path, magic).tags
    if tags is None or RECIPE_TAG not in tags:
        return None
    recipe = json.loads(tags[RECIPE_TAG][0])
    features = json.loads(tags[FEATURES_TAG][0]) if FEATURES_TAG in tags else None
    return _envelope_from_parts(recipe, features)


def _envelope_from_parts(recipe: dict[str, Any], features: Any) -> dict[str, Any]:
    return {
        "format": ENVELOPE_FORMAT,
        "app_version": recipe.get("app_version", __version__),
        "recipe": recipe,
        "features": features,
    }


# --- file names ----------------------------------------------------------------------------


def slugify(text: str, max_length: int = SLUG_MAX) -> str:
    """ASCII, lowercase, hyphen-separated, at most `max_length` characters, cut at a word
    boundary when possible: "Dark Techno Kick @ 130 BPM!" -> "dark-techno-kick-130-bpm"."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_length:
        cut = slug[:max_length]
        if slug[max_length] != "-" and "-" in cut:
            cut = cut.rsplit("-", 1)[0]  # do not end on half a word
        slug = cut.strip("-")
    return slug


def default_filename(
    recipe: Recipe | Mapping[str, Any],
    template: str = DEFAULT_TEMPLATE,
    *,
    fmt: str = DEFAULT_FORMAT,
    features: AudioFeatures | Mapping[str, Any] | None = None,
) -> str:
    """A safe file name (with extension) for a take, from a template with the fields
    {prompt_slug} {seed} {model} {date} {time} {bpm} {key}. bpm and key come from `features`
    and are left empty when unknown. Raises `BadInputError` for unknown fields."""
    spec = FORMATS[parse_format(fmt)]
    r = recipe.to_dict() if isinstance(recipe, Recipe) else dict(recipe)
    f = features.to_dict() if isinstance(features, AudioFeatures) else dict(features or {})
    created = _parse_created(r.get("created"))
    tempo = f.get("tempo_bpm")
    key = f.get("key")
    values = {
        "prompt_slug": slugify(r.get("prompt", "")) or "take",
        "seed": str(r.get("seed", "")),
        "model": slugify(str(r.get("model", "")).rstrip("/").rsplit("/", 1)[-1]),
        "date": created.strftime("%Y%m%d"),
        "time": created.strftime("%H%M%S"),
        "bpm": f"{round(tempo)}bpm" if isinstance(tempo, (int, float)) else "",
        "key": _short_key(key, f.get("mode")) if key else "",
    }
    for _literal, field_name, spec_text, _conv in string.Formatter().parse(template):
        if field_name is None:
            continue
        if field_name not in values:
            fields = ", ".join("{" + k + "}" for k in TEMPLATE_FIELDS)
            raise BadInputError(f"unknown file name field {{{field_name}}}; use {fields}")
        if spec_text:
            raise BadInputError(f"file name fields take no format spec ({{{field_name}:...}})")
    try:
        stem = template.format(**values)
    except (ValueError, IndexError) as exc:
        raise BadInputError(f"bad file name template {template!r}: {exc}") from exc
    return _safe_stem(stem) + spec.extension


def unique_path(path: str | os.PathLike[str]) -> Path:
    """`path` if nothing is there yet, else the first free `name_2.ext`, `name_3.ext`, ..."""
    p = Path(path)
    if not p.exists():
        return p
    n = 2
    while True:
        candidate = p.with_name(f"{p.stem}_{n}{p.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _safe_stem(stem: str) -> str:
    # Templates are user text: no path separators, no characters Windows/macOS reject.
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", stem)
    stem = re.sub(r"[-_. ]*_[-_. ]*", "_", stem)  # empty fields leave runs like "-_-"
    stem = re.sub(r"-{2,}", "-", stem)
    stem = stem.strip(" ._-")[:STEM_MAX].rstrip(" .")
    if not stem:
        stem = "take"
    if stem.split(".")[0].lower() in RESERVED_STEMS:
        stem = "_" + stem
    return stem


def _short_key(key: str, mode: Any) -> str:
    # "F#m" / "C": the way key columns in DAWs and DJ software write it; '#' is spelled out
    # as "s" in file names because some samplers choke on '#'.
    return key.replace("#", "s") + ("m" if mode == "minor" else "")


def _parse_created(value: Any) -> datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return datetime.now()


# --- writing -------------------------------------------------------------------------------


def _target_path(path: Path, name: str) -> Path:
    extension = FORMATS[name].extension
    suffix = path.suffix.lower()
    if not path.name or path.name in (".", ".."):
        raise BadInputError(
            f"{path} is not a file name; add one, e.g. {path / ('take' + extension)}"
        )
    if suffix == extension or (
        suffix in EXTENSIONS and FORMATS[EXTENSIONS[suffix]].extension == extension
    ):
        return path
    if suffix in EXTENSIONS:
        raise BadInputError(
            f"{path.name} ends in {path.suffix} but the format is {name}; "
            f"rename it to {path.stem}{extension} or pick a {suffix[1:]} format"
        )
    return path.with_name(path.name + extension)


def _frames(audio: np.ndarray, spec: FormatSpec) -> np.ndarray:
    """(samples, channels) float32, the layout soundfile writes."""
    x = np.asarray(audio)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise BadInputError(f"audio must be shaped (channels, samples); got shape {x.shape}")
    if x.shape[0] > 32 and x.shape[1] <= 32:
        raise BadInputError(
            f"audio shaped {x.shape} looks like (samples, channels); pass (channels, samples)"
        )
    if x.shape[1] == 0:
        raise BadInputError("the take has no audio to export")
    if np.issubdtype(x.dtype, np.integer):
        x = x / float(np.iinfo(x.dtype).max)
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    if spec.subtype != "FLOAT":
        # libsndfile wraps out-of-range floats when converting to integers: clip instead.
        x = np.clip(x, -1.0, 1.0)
    return np.ascontiguousarray(x.T)


def _sample_rate(sample_rate: int) -> int:
    try:
        sr = int(sample_rate)
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"sample rate must be a whole number of Hz (got {sample_rate!r})"
        ) from exc
    if not 1000 <= sr <= 768000:
        raise BadInputError(f"sample rate {sr} Hz is out of range (1000..768000)")
    return sr


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next(
            (p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None
        )
        if blocker is not None:
            raise OutputNotWritableError(
                f"cannot create the export folder {folder}: {blocker} is a file, not a folder; "
                "choose another export folder"
            ) from exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"the disk is full; cannot create {folder}") from exc
        raise OutputNotWritableError(
            f"cannot create the export folder {folder} ({exc.strerror or exc}); "
            "check its permissions or choose another export folder"
        ) from exc
    if not folder.is_dir():
        raise OutputNotWritableError(f"{folder} is not a folder; choose another export folder")


def _check_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed:
        raise DiskFullError(
            f"not enough free disk space in {folder}: the export needs about "
            f"{needed / 1e6:.1f} MB and {free / 1e6:.1f} MB is free; free some space or export elsewhere"
        )


def _reserve_temp(final: Path) -> Path:
    """Create an empty hidden temp file next to `final` (same filesystem, so the rename is
    atomic). Normal permissions (0666 minus umask), unlike mkstemp's 0600."""
    for _ in range(100):
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise OutputNotWritableError(f"cannot create a temporary file in {final.parent}")


def _write_audio(path: Path, frames: np.ndarray, sample_rate: int, spec: FormatSpec) -> None:
    import soundfile as sf

    options: dict[str, Any] = {}
    if (
        spec.container == "OGG"
        and "compression_level" in inspect.signature(sf.SoundFile).parameters
    ):
        # Vorbis quality ~0.7 (~220 kbit/s stereo) instead of libsndfile's 0.4; soundfile < 0.13
        # cannot set it and keeps the default.
        options["compression_level"] = 0.3
    try:
        with sf.SoundFile(
            path,
            "w",
            samplerate=sample_rate,
            channels=frames.shape[1],
            format=spec.container,
            subtype=spec.subtype,
            **options,
        ) as f:
            for start in range(0, len(frames), BLOCK_FRAMES):
                f.write(frames[start : start + BLOCK_FRAMES])
    except sf.LibsndfileError as exc:
        # Opening fails for combinations the format cannot hold (e.g. 9-channel FLAC).
        raise _AudioFormatError(
            f"cannot write {frames.shape[1]}-channel {sample_rate} Hz audio as {spec.container}: "
            f"{exc.error_string}"
        ) from exc


class _AudioFormatError(Exception):
    """libsndfile refused the format parameters (translated to BadInputError)."""


def _embed(path: Path, name: str, envelope: dict[str, Any]) -> None:
    if FORMATS[name].container == "WAV":
        riff.set_chunks(path, _wav_chunks(envelope))
    else:
        _write_vorbis_comments(path, envelope)


def _wav_chunks(envelope: dict[str, Any]) -> list[bytes]:
    recipe = envelope["recipe"]
    info = {
        "INAM": str(recipe.get("prompt", "")),
        "ISFT": f"{APP} {__version__}",
        "ICMT": json.dumps(recipe, ensure_ascii=True, sort_keys=True),
    }
    created = recipe.get("created")
    if isinstance(created, str) and len(created) >= 10:
        info["ICRD"] = created[:10]
    # ASCII JSON inside the XML: no encoding or invalid-character surprises for any reader.
    body = json.dumps(envelope, ensure_ascii=True, sort_keys=True)
    note = _xml_text(str(recipe.get("prompt", "")))
    ixml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<BWFXML>"
        "<IXML_VERSION>2.10</IXML_VERSION>"
        f"<PROJECT>{APP}</PROJECT>"
        f"<NOTE>{escape(note)}</NOTE>"
        f"<{IXML_ELEMENT}>{escape(body)}</{IXML_ELEMENT}>"
        "</BWFXML>"
    )
    return [riff.encode_info(info), riff.encode_chunk(b"iXML", ixml.encode("utf-8"))]


def _xml_text(text: str) -> str:
    # XML 1.0 forbids most control characters and lone surrogates even when escaped.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text)


def _utf8_text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _write_vorbis_comments(path: Path, envelope: dict[str, Any]) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    audio = _open_tags(path, magic)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    recipe = envelope["recipe"]
    features = envelope["features"] or {}
    tags["TITLE"] = _utf8_text(str(recipe.get("prompt", "")))
    tags["COMMENT"] = _utf8_text(
        f"{APP}: {recipe.get('model', '?')}, seed {recipe.get('seed', '?')}"
    )
    tags["ENCODER"] = f"{APP} {__version__}"
    if isinstance(recipe.get("created"), str):
        tags["DATE"] = recipe["created"][:10]
    if isinstance(features.get("tempo_bpm"), (int, float)):
        tags["BPM"] = str(round(features["tempo_bpm"]))
    if features.get("key"):
        tags["INITIALKEY"] = features["key"] + ("m" if features.get("mode") == "minor" else "")
    tags[RECIPE_TAG] = _utf8_text(json.dumps(recipe, ensure_ascii=False, sort_keys=True))
    if envelope["features"] is not None:
        tags[FEATURES_TAG] = json.dumps(envelope["features"], sort_keys=True)
    audio.save()


def _open_tags(path: Path, magic: bytes) -> Any:
    if magic == b"fLaC":
        from mutagen.flac import FLAC

        return FLAC(path)
    from mutagen.oggvorbis import OggVorbis

    return OggVorbis(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _translate(exc: BaseException, target: Path, folder: Path) -> BaseException:
    """Turn low-level failures into the typed errors both front ends know how to show."""
    if isinstance(exc, (BadInputError, DiskFullError)) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, _AudioFormatError):
        return BadInputError(f"{exc}; try another format (wav24 holds anything)")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"the disk is full while writing {target}; free some space or export elsewhere"
        )
    if _disk_nearly_full(folder):
        return DiskFullError(
            f"the disk is full while writing {target}; free some space or export elsewhere"
        )
    if isinstance(exc, OSError):
        return OutputNotWritableError(
            f"cannot write {target} ({exc.strerror or exc}); check the folder's permissions "
            "or choose another export folder"
        )
    return OutputNotWritableError(f"cannot write {target} ({exc}); choose another export folder")


def _disk_nearly_full(folder: Path) -> bool:
    # libsndfile reports a short write, not ENOSPC: look at the disk itself.
    try:
        return shutil.disk_usage(folder).free < 1_000_000
    except OSError:
        return False
