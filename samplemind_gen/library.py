"""The library: every take remembered, findable and recoverable.

One SQLite database (`paths.library_db()`) in WAL mode holds a row per take: its recipe, where
the file is, the file's SHA-256, the analysed features, rating, favourite flag, tags and when it
was made. The batch queue lives in the same database (see `samplemind_gen.batch`).

Writes are single transactions (`BEGIN IMMEDIATE` ... `COMMIT`) with `synchronous=FULL`, so a
crash or a kill at any moment leaves either the whole write or none of it, and a committed take
survives even a power cut. Deleting a take moves its file into a trash folder next to the
database; `restore` puts it back.

The result cache is built on `take_identity`: a hash of everything that decides a take's audio
(prompt, model, revision, family, seed, parameters, device, dtype, and the post-processing
applied before export). A request whose identity matches a stored take whose file is still
intact is answered with that take instead of being generated again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplemind_gen.errors import BadInputError, SampleMindError
from samplemind_gen.recipe import Recipe

if TYPE_CHECKING:
    from samplemind_gen.analysis import AudioFeatures
    from samplemind_gen.take import Take

SCHEMA_VERSION = 1
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

SCHEMA = """
CREATE TABLE IF NOT EXISTS takes (
    id            TEXT PRIMARY KEY,
    created       TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    model         TEXT NOT NULL,
    revision      TEXT,
    family        TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    device        TEXT NOT NULL,
    dtype         TEXT NOT NULL,
    sample_rate   INTEGER NOT NULL,
    channels      INTEGER NOT NULL,
    duration      REAL NOT NULL,
    recipe_json   TEXT NOT NULL,
    processing_json TEXT NOT NULL DEFAULT '{}',
    identity      TEXT NOT NULL,
    path          TEXT,
    audio_sha256  TEXT,
    features_json TEXT,
    tempo_bpm     REAL,
    music_key     TEXT,
    mode          TEXT,
    lufs          REAL,
    rating        INTEGER CHECK (rating IS NULL OR rating BETWEEN 1 AND 5),
    favourite     INTEGER NOT NULL DEFAULT 0,
    batch_id      TEXT,
    deleted_at    TEXT,
    trash_path    TEXT
);
CREATE INDEX IF NOT EXISTS takes_identity ON takes(identity);
CREATE INDEX IF NOT EXISTS takes_created ON takes(created);
CREATE INDEX IF NOT EXISTS takes_batch ON takes(batch_id);
CREATE TABLE IF NOT EXISTS tags (
    take_id TEXT NOT NULL REFERENCES takes(id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (take_id, tag)
);
CREATE TABLE IF NOT EXISTS batches (
    id        TEXT PRIMARY KEY,
    created   TEXT NOT NULL,
    source    TEXT,
    out_dir   TEXT,
    options_json TEXT NOT NULL DEFAULT '{}',
    status    TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS batch_items (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id  TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    model     TEXT NOT NULL,
    request_json TEXT NOT NULL,
    processing_json TEXT NOT NULL DEFAULT '{}',
    status    TEXT NOT NULL DEFAULT 'pending',
    take_id   TEXT,
    error     TEXT,
    updated   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_items_batch ON batch_items(batch_id, position);
"""

TAKE_COLUMNS = (
    "id, created, prompt, model, revision, family, seed, device, dtype, sample_rate, channels, "
    "duration, recipe_json, processing_json, identity, path, audio_sha256, features_json, "
    "tempo_bpm, music_key, mode, lufs, rating, favourite, batch_id, deleted_at, trash_path"
)


class LibraryError(SampleMindError):
    """The library database cannot be opened or is damaged."""


# --- identity (result cache) -----------------------------------------------------------------


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def take_identity(
    *,
    prompt: str,
    model: str,
    revision: str | None,
    family: str,
    seed: int,
    params: Mapping[str, Any],
    device: str,
    dtype: str,
    processing: Mapping[str, Any] | None = None,
) -> str:
    """A SHA-256 over everything that decides a take's audio. Equal identities, equal audio."""
    data = {
        "prompt": prompt.strip(),
        "model": model,
        "revision": revision,
        "family": family,
        "seed": int(seed),
        "params": dict(params),
        "device": device,
        "dtype": dtype,
        "processing": dict(processing or {}),
    }
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def recipe_identity(recipe: Recipe, processing: Mapping[str, Any] | None = None) -> str:
    return take_identity(
        prompt=recipe.prompt,
        model=recipe.model,
        revision=recipe.revision,
        family=recipe.family,
        seed=recipe.seed,
        params=recipe.params,
        device=recipe.device,
        dtype=recipe.dtype,
        processing=processing,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTake:
    """A take as the library remembers it (audio stays in its file)."""

    id: str
    recipe: Recipe
    created: str
    path: Path | None
    audio_sha256: str | None
    features: dict[str, Any] | None
    processing: dict[str, Any]
    identity: str
    rating: int | None = None
    favourite: bool = False
    tags: tuple[str, ...] = ()
    batch_id: str | None = None
    deleted_at: str | None = None
    trash_path: Path | None = None

    @property
    def prompt(self) -> str:
        return self.recipe.prompt

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def tempo_bpm(self) -> float | None:
        return (self.features or {}).get("tempo_bpm")

    @property
    def lufs(self) -> float | None:
        return (self.features or {}).get("lufs")

    @property
    def key_label(self) -> str | None:
        f = self.features or {}
        if not f.get("key"):
            return None
        return f"{f['key']} {f['mode']}" if f.get("mode") else str(f["key"])

    def audio_features(self) -> AudioFeatures | None:
        if self.features is None:
            return None
        from samplemind_gen.analysis import AudioFeatures

        return AudioFeatures.from_dict(self.features)

    def file_is_intact(self) -> bool:
        """The file is where the library says and has the bytes it had when recorded."""
        if self.path is None or not self.path.is_file():
            return False
        if self.audio_sha256 is None:
            return True
        try:
            return file_sha256(self.path) == self.audio_sha256
        except OSError:
            return False

    def load(self) -> Take:
        """The take with its audio read back from the file."""
        from samplemind_gen.audio_io import read_audio
        from samplemind_gen.take import Take

        source = self.trash_path if self.deleted else self.path
        if source is None:
            raise BadInputError(f"take {self.id} has no audio file in the library")
        audio, sr = read_audio(source)
        return Take(
            audio=audio,
            sample_rate=sr,
            recipe=self.recipe,
            features=self.audio_features(),
            id=self.id,
            path=self.path,
        )

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints for a stored take."""
        r = self.recipe
        return {
            "id": self.id,
            "created": self.created,
            "path": str(self.path) if self.path else None,
            "prompt": r.prompt,
            "model": r.model,
            "revision": r.revision,
            "family": r.family,
            "seed": r.seed,
            "device": r.device,
            "dtype": r.dtype,
            "sample_rate": r.sample_rate,
            "channels": r.channels,
            "duration": r.duration,
            "params": r.params,
            "processing": self.processing,
            "audio_sha256": self.audio_sha256,
            "features": self.features,
            "rating": self.rating,
            "favourite": self.favourite,
            "tags": list(self.tags),
            "batch_id": self.batch_id,
            "deleted": self.deleted,
            "trash_path": str(self.trash_path) if self.trash_path else None,
        }


@dataclass(frozen=True)
class TakeFilter:
    """What to look for. Every field left at None matches everything.

    `text`: every word must appear in the prompt or a tag (case-insensitive). `model`: part of the
    model name or repo id. `key`: "A minor", "Am", "F#", "Bb major". Ranges are inclusive.
    `deleted`: False = live takes only (default), True = the trash only, None = both.
    """

    text: str | None = None
    model: str | None = None
    key: str | None = None
    bpm_min: float | None = None
    bpm_max: float | None = None
    lufs_min: float | None = None
    lufs_max: float | None = None
    rating_min: int | None = None
    favourite: bool | None = None
    tags: tuple[str, ...] = ()
    batch_id: str | None = None
    ids: tuple[str, ...] = ()
    deleted: bool | None = False
    order: str = "newest"  # newest | oldest | rating | bpm
    limit: int | None = None
    offset: int = 0


def parse_query(text: str) -> TakeFilter:
    """A search-box query: free words plus `key:Am`, `bpm:120` (+-2) or `bpm:118-126`,
    `lufs:-14` (+-1) or `lufs:-16..-8`, `model:small`, `tag:drums`, `stars:4` (at least),
    `fav`, `batch:ID`, `trash`. Raises `BadInputError` for a value it cannot read."""
    words: list[str] = []
    values: dict[str, Any] = {}
    tags: list[str] = []
    for token in text.split():
        name, sep, value = token.partition(":")
        name = name.lower()
        if not sep:
            if name in ("fav", "favs", "favourite", "favourites", "favorite", "♥"):
                values["favourite"] = True
            elif name == "trash":
                values["deleted"] = True
            else:
                words.append(token)
            continue
        if name == "key":
            parse_key(value)
            values["key"] = value
        elif name == "bpm":
            values["bpm_min"], values["bpm_max"] = _query_range(value, 2.0, "bpm")
        elif name == "lufs":
            values["lufs_min"], values["lufs_max"] = _query_range(value, 1.0, "lufs")
        elif name == "model":
            values["model"] = value
        elif name == "tag":
            tags.append(value)
        elif name in ("stars", "rating"):
            try:
                values["rating_min"] = int(value.rstrip("+"))
            except ValueError as exc:
                raise BadInputError(
                    f"stars:{value} - give a number of stars, e.g. stars:4"
                ) from exc
        elif name == "batch":
            values["batch_id"] = value
        else:
            words.append(token)
    return TakeFilter(text=" ".join(words) or None, tags=tuple(tags), **values)


def _query_range(value: str, tolerance: float, what: str) -> tuple[float | None, float | None]:
    try:
        if ".." in value:
            low, high = value.split("..", 1)
            return (float(low) if low else None, float(high) if high else None)
        m = re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)", value)
        if m:
            return float(m.group(1)), float(m.group(2))
        centre = float(value)
        return centre - tolerance, centre + tolerance
    except ValueError as exc:
        raise BadInputError(
            f"{what}:{value} - write a value ({what}:120) or a range ({what}:118..126)"
        ) from exc


def parse_key(text: str) -> tuple[str, str | None]:
    """ "Am" -> ("A", "minor"); "Bb major" -> ("A#", "major"); "F#" -> ("F#", None)."""
    raw = text.strip()
    m = re.fullmatch(r"([A-Ga-g])([#b♯♭s]?)\s*(m|min|minor|maj|major|M)?", raw)
    if not m:
        raise BadInputError(f"cannot read the key {text!r}; write it like 'A minor', 'Am' or 'F#'")
    letter, accidental, quality = m.groups()
    index = PITCH_CLASSES.index(letter.upper())
    if accidental in ("#", "♯", "s"):
        index += 1
    elif accidental in ("b", "♭"):
        index -= 1
    name = PITCH_CLASSES[index % 12]
    mode: str | None = None
    if quality in ("m", "min", "minor"):
        mode = "minor"
    elif quality in ("maj", "major", "M"):
        mode = "major"
    return name, mode


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the library -----------------------------------------------------------------------------


class Library:
    """The take database. Safe to share between threads; open one per process."""

    def __init__(self, path: Path | str | None = None) -> None:
        from samplemind_gen import paths

        self.path = Path(path) if path is not None else paths.library_db()
        self.trash_dir = self.path.parent / "trash"
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=15.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 15000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LibraryError(f"the library {self.path} cannot use WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LibraryError(
                f"the library database {self.path} cannot be opened ({exc}); if it is damaged, "
                "move it aside and a new one is created (your audio files are untouched)"
            ) from exc
        except OSError as exc:
            raise LibraryError(
                f"cannot create the library in {self.path.parent} ({exc.strerror or exc}); "
                "set SAMPLEMIND_GEN_HOME to a writable folder"
            ) from exc

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise LibraryError(
                    f"the library {self.path} was written by a newer samplemind-gen (schema "
                    f"{version}); upgrade samplemind-gen to open it"
                )
            if version < SCHEMA_VERSION:
                with self.transaction() as db:
                    db.executescript_safe(SCHEMA)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------- plumbing
    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """One atomic write: everything inside commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _Transaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, tuple(args)).fetchall())

    # ---------------------------------------------------------------- writes
    def add(
        self,
        take: Take,
        *,
        processing: Mapping[str, Any] | None = None,
        batch_id: str | None = None,
        tags: Iterable[str] = (),
    ) -> StoredTake:
        """Record an exported take (idempotent: a take already stored is left as it is)."""
        recipe = take.recipe
        processing = dict(processing or {})
        path = Path(take.path).resolve() if take.path is not None else None
        sha = file_sha256(path) if path is not None and path.is_file() else None
        features = take.features.to_dict() if take.features is not None else None
        f = features or {}
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO takes ({TAKE_COLUMNS}) VALUES ({', '.join('?' * 27)}) "
                "ON CONFLICT(id) DO NOTHING",
                (
                    take.id,
                    recipe.created or _now(),
                    recipe.prompt,
                    recipe.model,
                    recipe.revision,
                    recipe.family,
                    int(recipe.seed),
                    recipe.device,
                    recipe.dtype,
                    int(take.sample_rate),
                    int(take.channels),
                    float(take.duration),
                    recipe.to_json(),
                    canonical_json(processing),
                    recipe_identity(recipe, processing),
                    str(path) if path else None,
                    sha,
                    json.dumps(features, allow_nan=False) if features is not None else None,
                    f.get("tempo_bpm"),
                    f.get("key"),
                    f.get("mode"),
                    f.get("lufs"),
                    None,
                    0,
                    batch_id,
                    None,
                    None,
                ),
            )
            for tag in _clean_tags(tags):
                db.execute("INSERT OR IGNORE INTO tags VALUES (?, ?)", (take.id, tag))
        return self.get(take.id)

    def rate(self, take_id: str, rating: int | None) -> StoredTake:
        """Rate 1-5; None (or 0) clears the rating."""
        if rating == 0:
            rating = None
        if rating is not None and not (isinstance(rating, int) and 1 <= rating <= 5):
            raise BadInputError(f"a rating is 1 to 5 stars, or 0 to clear it (got {rating})")
        entry = self.get(take_id)
        with self.transaction() as db:
            db.execute("UPDATE takes SET rating = ? WHERE id = ?", (rating, entry.id))
        return self.get(entry.id)

    def set_favourite(self, take_id: str, favourite: bool = True) -> StoredTake:
        entry = self.get(take_id)
        with self.transaction() as db:
            db.execute("UPDATE takes SET favourite = ? WHERE id = ?", (int(favourite), entry.id))
        return self.get(entry.id)

    def tag(self, take_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> StoredTake:
        entry = self.get(take_id)
        with self.transaction() as db:
            for tag in _clean_tags(add):
                db.execute("INSERT OR IGNORE INTO tags VALUES (?, ?)", (entry.id, tag))
            for tag in _clean_tags(remove):
                db.execute("DELETE FROM tags WHERE take_id = ? AND tag = ?", (entry.id, tag))
        return self.get(entry.id)

    def delete(self, take_id: str) -> StoredTake:
        """Move the take's file (and its JSON sidecar) to the trash; `restore` undoes it."""
        entry = self.get(take_id)
        if entry.deleted:
            return entry
        trash: Path | None = None
        moved: list[tuple[Path, Path]] = []
        try:
            with self.transaction() as db:
                db.execute(
                    "UPDATE takes SET deleted_at = ?, trash_path = ? WHERE id = ?",
                    (_now(), None, entry.id),
                )
                if entry.path is not None and entry.path.exists():
                    folder = self.trash_dir / entry.id
                    folder.mkdir(parents=True, exist_ok=True)
                    trash = folder / entry.path.name
                    moved = _move_with_sidecar(entry.path, trash)
                    db.execute(
                        "UPDATE takes SET trash_path = ? WHERE id = ?", (str(trash), entry.id)
                    )
        except BaseException:
            _undo(moved)  # the row rolled back: the files go back too
            raise
        return self.get(entry.id)

    def restore(self, take_id: str) -> StoredTake:
        """Bring a deleted take back to where it was (or next to it, if that name is taken)."""
        entry = self.get(take_id, include_deleted=True)
        if not entry.deleted:
            return entry
        target = entry.path
        moved: list[tuple[Path, Path]] = []
        try:
            with self.transaction() as db:
                if entry.trash_path is not None and entry.trash_path.exists():
                    if target is None:
                        raise BadInputError(f"take {entry.id} has no original location")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists():
                        from samplemind_gen.export import unique_path

                        target = unique_path(target)
                    moved = _move_with_sidecar(entry.trash_path, target)
                db.execute(
                    "UPDATE takes SET deleted_at = NULL, trash_path = NULL, path = ? WHERE id = ?",
                    (str(target) if target else None, entry.id),
                )
        except BaseException:
            _undo(moved)
            raise
        with contextlib.suppress(OSError):
            (self.trash_dir / entry.id).rmdir()
        return self.get(entry.id)

    def empty_trash(self) -> int:
        """Forget deleted takes for good and remove their files. Returns how many."""
        gone = self.find(TakeFilter(deleted=True))
        with self.transaction() as db:
            for entry in gone:
                db.execute("DELETE FROM takes WHERE id = ?", (entry.id,))
        for entry in gone:
            shutil.rmtree(self.trash_dir / entry.id, ignore_errors=True)
        return len(gone)

    # ----------------------------------------------------------------- reads
    def get(self, take_id: str, *, include_deleted: bool = True) -> StoredTake:
        """The take with this id or unique id prefix; `BadInputError` when there is none."""
        take_id = take_id.strip()
        if not take_id:
            raise BadInputError("no take id given; `samplemind-gen library list` shows them")
        rows = self.query(
            f"SELECT {TAKE_COLUMNS} FROM takes WHERE id = ? OR id LIKE ? ESCAPE '\\' LIMIT 3",
            (take_id, _like_prefix(take_id)),
        )
        exact = [r for r in rows if r["id"] == take_id]
        if exact:
            rows = exact
        if not include_deleted:
            rows = [r for r in rows if r["deleted_at"] is None]
        if not rows:
            raise BadInputError(
                f"no take with id {take_id!r} in the library; `samplemind-gen library list` "
                "shows the ids"
            )
        if len(rows) > 1:
            raise BadInputError(f"id {take_id!r} matches several takes; give more characters")
        return self._entries(rows)[0]

    def find(self, where: TakeFilter | None = None, **kwargs: Any) -> list[StoredTake]:
        """Takes matching `where` (or the same fields as keyword arguments), newest first."""
        where = where or TakeFilter(**kwargs)
        sql, args = _filter_sql(where)
        return self._entries(self.query(f"SELECT {TAKE_COLUMNS} FROM takes {sql}", args))

    def count(self, where: TakeFilter | None = None, **kwargs: Any) -> int:
        where = where or TakeFilter(**kwargs)
        sql, args = _filter_sql(where, count=True)
        return int(self.query(f"SELECT COUNT(*) FROM takes {sql}", args)[0][0])

    def find_cached(self, identity: str) -> StoredTake | None:
        """The newest live take with this identity whose file is still intact, if any."""
        rows = self.query(
            f"SELECT {TAKE_COLUMNS} FROM takes WHERE identity = ? AND deleted_at IS NULL "
            "ORDER BY created DESC",
            (identity,),
        )
        for entry in self._entries(rows):
            if entry.file_is_intact():
                return entry
        return None

    def models(self) -> list[str]:
        rows = self.query(
            "SELECT DISTINCT model FROM takes WHERE deleted_at IS NULL ORDER BY model"
        )
        return [r[0] for r in rows]

    def _entries(self, rows: Sequence[sqlite3.Row]) -> list[StoredTake]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        tags: dict[str, list[str]] = {i: [] for i in ids}
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            for t in self.query(
                f"SELECT take_id, tag FROM tags WHERE take_id IN ({marks}) ORDER BY tag", chunk
            ):
                tags[t["take_id"]].append(t["tag"])
        return [_entry(r, tuple(tags[r["id"]])) for r in rows]


class _Transaction:
    """The connection inside `Library.transaction()`; `executescript` would commit early, so
    scripts are split into statements here."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(args))

    def executescript_safe(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)


# --- helpers ---------------------------------------------------------------------------------


def _entry(row: sqlite3.Row, tags: tuple[str, ...]) -> StoredTake:
    recipe = Recipe.from_dict(json.loads(row["recipe_json"]))
    return StoredTake(
        id=row["id"],
        recipe=recipe,
        created=row["created"],
        path=Path(row["path"]) if row["path"] else None,
        audio_sha256=row["audio_sha256"],
        features=json.loads(row["features_json"]) if row["features_json"] else None,
        processing=json.loads(row["processing_json"] or "{}"),
        identity=row["identity"],
        rating=row["rating"],
        favourite=bool(row["favourite"]),
        tags=tags,
        batch_id=row["batch_id"],
        deleted_at=row["deleted_at"],
        trash_path=Path(row["trash_path"]) if row["trash_path"] else None,
    )


def _filter_sql(f: TakeFilter, *, count: bool = False) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if f.deleted is True:
        clauses.append("deleted_at IS NOT NULL")
    elif f.deleted is False:
        clauses.append("deleted_at IS NULL")
    for word in (f.text or "").split():
        pattern = _like_contains(word)
        clauses.append(
            "(prompt LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM tags t WHERE t.take_id = "
            "takes.id AND t.tag LIKE ? ESCAPE '\\'))"
        )
        args += [pattern, pattern]
    if f.model:
        clauses.append("model LIKE ? ESCAPE '\\'")
        args.append(_like_contains(f.model))
    if f.key:
        name, mode = parse_key(f.key)
        clauses.append("music_key = ?")
        args.append(name)
        if mode:
            clauses.append("mode = ?")
            args.append(mode)
    for column, low, high in (
        ("tempo_bpm", f.bpm_min, f.bpm_max),
        ("lufs", f.lufs_min, f.lufs_max),
    ):
        if low is not None:
            clauses.append(f"{column} >= ?")
            args.append(float(low))
        if high is not None:
            clauses.append(f"{column} <= ?")
            args.append(float(high))
    if f.rating_min is not None:
        clauses.append("rating >= ?")
        args.append(int(f.rating_min))
    if f.favourite is not None:
        clauses.append("favourite = ?")
        args.append(int(f.favourite))
    for tag in _clean_tags(f.tags):
        clauses.append("EXISTS (SELECT 1 FROM tags t WHERE t.take_id = takes.id AND t.tag = ?)")
        args.append(tag)
    if f.batch_id:
        clauses.append("batch_id = ?")
        args.append(f.batch_id)
    if f.ids:
        id_clauses = []
        for take_id in f.ids:
            id_clauses.append("id LIKE ? ESCAPE '\\'")
            args.append(_like_prefix(take_id))
        clauses.append("(" + " OR ".join(id_clauses) + ")")
    sql = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    if count:
        return sql, args
    orders = {
        "newest": "created DESC, rowid DESC",
        "oldest": "created ASC, rowid ASC",
        "rating": "rating IS NULL, rating DESC, created DESC",
        "bpm": "tempo_bpm IS NULL, tempo_bpm ASC, created DESC",
    }
    if f.order not in orders:
        raise BadInputError(f"unknown sort order {f.order!r}; use {', '.join(orders)}")
    sql += " ORDER BY " + orders[f.order]
    if f.limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [int(f.limit), int(f.offset)]
    return sql, args


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_contains(text: str) -> str:
    return f"%{_like_escape(text)}%"


def _like_prefix(text: str) -> str:
    return f"{_like_escape(text)}%"


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    out = []
    for tag in tags:
        t = " ".join(str(tag).strip().lower().split())
        if t and t not in out:
            out.append(t)
    return out


def _move_with_sidecar(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """Move a file and its `.json` sidecar if it has one; returns what moved, for undo."""
    moved = []
    pairs = [(source, target)]
    side = source.with_name(source.name + ".json")
    if side.exists():
        pairs.append((side, target.with_name(target.name + ".json")))
    try:
        for src, dst in pairs:
            shutil.move(os.fspath(src), os.fspath(dst))
            moved.append((src, dst))
    except OSError as exc:
        _undo(moved)
        raise BadInputError(f"cannot move {source} to {target} ({exc.strerror or exc})") from exc
    return moved


def _undo(moved: list[tuple[Path, Path]]) -> None:
    for src, dst in reversed(moved):
        with contextlib.suppress(OSError):
            shutil.move(os.fspath(dst), os.fspath(src))
