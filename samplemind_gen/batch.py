"""Batches: many takes from a prompt file, queued in the library database so that a batch
stopped by Ctrl-C, a crash or a reboot resumes where it stopped.

A batch file is plain text (one prompt a line, `#` comments), JSON Lines (one object a line)
or TOML (`[defaults]` plus `[[item]]` tables). Objects take the `GenerationRequest` fields
(`prompt`, `duration`, `seed`, `temperature`, `top_k`, `top_p`, `guidance`/`guidance_scale`,
`steps`, `negative_prompt`, `scheduler`), plus `model`, `variations`, `tags` and
post-processing (`normalize`, `true_peak`, `fade_in`, `fade_out`, `trim`, `resample`,
`loop_bars`, `bpm`, `beats_per_bar`, or a `processing` table).

Every item gets its seed when it is queued, so a resumed batch makes exactly the takes the
first run would have made. Items are grouped by model (each model loads once) and then by
parameters: items that share both run as one batched forward pass of up to `batch_size`
takes. An item is marked done in the same database as its take; an item that was running when
the process died is looked up in the result cache first, so a take that was finished but not
yet marked is found, not made again.
"""

from __future__ import annotations

import json
import logging
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from samplemind_gen.errors import BadInputError, GenerationCancelled, SampleMindError
from samplemind_gen.library import Library, canonical_json
from samplemind_gen.request import MAX_SEED, GenerationRequest, random_seed

log = logging.getLogger(__name__)

REQUEST_FIELDS = {f.name for f in fields(GenerationRequest)}
REQUEST_ALIASES = {
    "guidance": "guidance_scale",
    "cfg": "guidance_scale",
    "top-k": "top_k",
    "top-p": "top_p",
    "negative": "negative_prompt",
    "negative-prompt": "negative_prompt",
}
PROCESSING_ALIASES = {
    "normalize": "normalize_lufs",
    "normalise": "normalize_lufs",
    "lufs": "normalize_lufs",
    "true_peak": "true_peak_db",
    "true-peak": "true_peak_db",
    "fade-in": "fade_in",
    "fade-out": "fade_out",
    "loop-bars": "loop_bars",
    "beats-per-bar": "beats_per_bar",
    "trim_threshold": "trim_threshold_db",
}
ITEM_KEYS = {"model", "variations", "tags", "processing"}
STATUSES = ("pending", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class BatchItemSpec:
    """One line of a batch file, before seeds are drawn."""

    request: GenerationRequest
    model: str | None = None
    variations: int = 1
    processing: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class BatchItem:
    """A queued take."""

    id: int
    batch_id: str
    position: int
    model: str
    request: GenerationRequest
    processing: dict[str, Any]
    status: str
    take_id: str | None = None
    error: str | None = None
    tags: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "item": self.id,
            "position": self.position,
            "model": self.model,
            "prompt": self.request.prompt,
            "seed": self.request.seed,
            "status": self.status,
            "take_id": self.take_id,
            "error": self.error,
        }


@dataclass(frozen=True)
class BatchInfo:
    id: str
    created: str
    source: str | None
    out_dir: str | None
    options: dict[str, Any]
    status: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("running", 0)

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.id,
            "created": self.created,
            "source": self.source,
            "out_dir": self.out_dir,
            "status": self.status,
            "counts": self.counts,
            "total": self.total,
        }


# --- reading batch files ---------------------------------------------------------------------


def read_batch_file(path: Path, defaults: GenerationRequest) -> list[BatchItemSpec]:
    """Parse a .txt/.jsonl/.toml batch file into item specs; `defaults` fills what an item
    leaves out. Raises `BadInputError` naming the line for anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInputError(
            f"{path} does not exist; give a prompt file (.txt, .jsonl, .toml)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {path} as UTF-8 text ({exc})") from exc
    suffix = path.suffix.lower()
    if suffix == ".toml":
        items = _toml_items(text, path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        items = _jsonl_items(text, path)
    else:
        items = _text_items(text)
    specs = [_spec(raw, line, defaults, path) for line, raw in items]
    if not specs:
        raise BadInputError(f"{path} has no prompts; write one prompt a line")
    return specs


def _text_items(text: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            out.append((n, {"prompt": prompt}))
    return out


def _jsonl_items(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        if isinstance(value, str):
            value = {"prompt": value}
        if not isinstance(value, dict):
            raise BadInputError(f'{path}:{n}: expected an object like {{"prompt": "..."}}')
        out.append((n, value))
    return out


def _toml_items(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from exc
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise BadInputError(f"{path}: [defaults] must be a table")
    raw_items = data.get("item", data.get("items", data.get("prompts", [])))
    if isinstance(raw_items, dict):
        raw_items = [raw_items]
    out = []
    for n, raw in enumerate(raw_items, start=1):
        if isinstance(raw, str):
            raw = {"prompt": raw}
        if not isinstance(raw, dict):
            raise BadInputError(f"{path}: item {n} must be a table with a prompt")
        merged = {**defaults, **raw}
        if "processing" in defaults and "processing" in raw:
            merged["processing"] = {**defaults["processing"], **raw["processing"]}
        out.append((n, merged))
    return out


def _spec(
    raw: Mapping[str, Any], line: int, defaults: GenerationRequest, path: Path
) -> BatchItemSpec:
    where = f"{path}:{line}" if path.suffix.lower() != ".toml" else f"{path}: item {line}"
    values: dict[str, Any] = {}
    processing: dict[str, Any] = dict(raw.get("processing") or {})
    from samplemind_gen.dsp import Processing

    processing_fields = {f.name for f in fields(Processing)}
    for key, value in raw.items():
        if key in ITEM_KEYS:
            continue
        name = REQUEST_ALIASES.get(key, key.replace("-", "_"))
        if name in REQUEST_FIELDS:
            values[name] = value
            continue
        pname = PROCESSING_ALIASES.get(key, key.replace("-", "_"))
        if pname in processing_fields:
            processing[pname] = value
            continue
        raise BadInputError(f"{where}: unknown key {key!r}")
    processing = {PROCESSING_ALIASES.get(k, k): v for k, v in processing.items()}
    unknown = set(processing) - processing_fields
    if unknown:
        raise BadInputError(f"{where}: unknown processing key {sorted(unknown)[0]!r}")
    if "duration" not in values and processing.get("loop_bars") and processing.get("bpm"):
        from samplemind_gen.dsp import loop_source_seconds

        values["duration"] = round(
            loop_source_seconds(
                float(processing["bpm"]),
                int(processing["loop_bars"]),
                int(processing.get("beats_per_bar", 4)),
            ),
            3,
        )
    if not isinstance(values.get("prompt", ""), str) or not str(values.get("prompt", "")).strip():
        raise BadInputError(f"{where}: no prompt")
    try:
        request = replace(defaults, **values)
    except TypeError as exc:
        raise BadInputError(f"{where}: {exc}") from exc
    variations = raw.get("variations", 1)
    if not isinstance(variations, int) or not 1 <= variations <= 64:
        raise BadInputError(f"{where}: variations must be a whole number from 1 to 64")
    tags = raw.get("tags", ())
    if isinstance(tags, str):
        tags = (tags,)
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise BadInputError(f"{where}: model must be a string")
    return BatchItemSpec(
        request=request,
        model=model,
        variations=variations,
        processing=processing,
        tags=tuple(str(t) for t in tags),
        line=line,
    )


# --- the queue -------------------------------------------------------------------------------


class BatchQueue:
    """The batch tables of the library database."""

    def __init__(self, library: Library) -> None:
        self.library = library

    def create(
        self,
        specs: Sequence[BatchItemSpec],
        *,
        default_model: str,
        variations: int = 1,
        source: str | None = None,
        out_dir: Path | None = None,
        options: Mapping[str, Any] | None = None,
        base_processing: Mapping[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Queue every take of `specs` (seeds drawn now) in one transaction; returns the id."""
        batch_id = batch_id or uuid.uuid4().hex[:10]
        now = _now()
        rows = []
        position = 0
        for spec in specs:
            count = spec.variations * variations
            for i in range(count):
                base = spec.request.seed
                seed = random_seed() if base is None else (int(base) + i) % (MAX_SEED + 1)
                request = replace(spec.request, seed=seed)
                processing = {**dict(base_processing or {}), **spec.processing}
                rows.append(
                    (
                        batch_id,
                        position,
                        spec.model or default_model,
                        canonical_json(
                            {"request": _request_dict(request), "tags": list(spec.tags)}
                        ),
                        canonical_json(processing),
                        "pending",
                        now,
                    )
                )
                position += 1
        with self.library.transaction() as db:
            db.execute(
                "INSERT INTO batches (id, created, source, out_dir, options_json, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                (
                    batch_id,
                    now,
                    source,
                    str(out_dir) if out_dir else None,
                    canonical_json(dict(options or {})),
                ),
            )
            for row in rows:
                db.execute(
                    "INSERT INTO batch_items (batch_id, position, model, request_json, "
                    "processing_json, status, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
        return batch_id

    def append(self, batch_id: str, model: str, requests: Sequence[GenerationRequest]) -> None:
        """Add takes to the end of a batch's queue (seeds drawn now)."""
        rows = self.library.query(
            "SELECT COALESCE(MAX(position), -1) AS last FROM batch_items WHERE batch_id = ?",
            (batch_id,),
        )
        position = int(rows[0]["last"]) + 1
        with self.library.transaction() as db:
            for request in requests:
                request = request.resolved()
                db.execute(
                    "INSERT INTO batch_items (batch_id, position, model, request_json, "
                    "processing_json, status, updated) VALUES (?, ?, ?, ?, '{}', 'pending', ?)",
                    (
                        batch_id,
                        position,
                        model,
                        canonical_json({"request": _request_dict(request), "tags": []}),
                        _now(),
                    ),
                )
                position += 1
            db.execute(
                "UPDATE batches SET status = 'pending' WHERE id = ? AND status = 'done'",
                (batch_id,),
            )

    def items(self, batch_id: str, statuses: Iterable[str] | None = None) -> list[BatchItem]:
        rows = self.library.query(
            "SELECT * FROM batch_items WHERE batch_id = ? ORDER BY position", (batch_id,)
        )
        wanted = set(statuses) if statuses is not None else None
        return [_item(r) for r in rows if wanted is None or r["status"] in wanted]

    def info(self, batch_id: str) -> BatchInfo:
        rows = self.library.query(
            "SELECT * FROM batches WHERE id = ? OR id LIKE ?", (batch_id, f"{batch_id}%")
        )
        if not rows:
            raise BadInputError(f"no batch {batch_id!r}; `samplemind-gen batch --list` shows them")
        if len(rows) > 1:
            raise BadInputError(f"batch id {batch_id!r} is ambiguous; give more characters")
        row = rows[0]
        counts = {
            r["status"]: int(r["n"])
            for r in self.library.query(
                "SELECT status, COUNT(*) AS n FROM batch_items WHERE batch_id = ? GROUP BY status",
                (row["id"],),
            )
        }
        return BatchInfo(
            id=row["id"],
            created=row["created"],
            source=row["source"],
            out_dir=row["out_dir"],
            options=json.loads(row["options_json"] or "{}"),
            status=row["status"],
            counts=counts,
        )

    def batches(self) -> list[BatchInfo]:
        rows = self.library.query("SELECT id FROM batches ORDER BY created DESC, rowid DESC")
        return [self.info(r["id"]) for r in rows]

    def latest_unfinished(self, source: str | None = None) -> BatchInfo | None:
        for info in self.batches():
            if info.unfinished and (source is None or info.source == source):
                return info
        return None

    def set_status(self, item_ids: Sequence[int], status: str, **extra: Any) -> None:
        if status not in STATUSES:
            raise ValueError(status)
        with self.library.transaction() as db:
            for item_id in item_ids:
                db.execute(
                    "UPDATE batch_items SET status = ?, take_id = COALESCE(?, take_id), "
                    "error = ?, updated = ? WHERE id = ?",
                    (status, extra.get("take_id"), extra.get("error"), _now(), item_id),
                )

    def set_batch_status(self, batch_id: str, status: str) -> None:
        with self.library.transaction() as db:
            db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def cancel(self, item_ids: Sequence[int]) -> None:
        """Take pending items out of the queue (they are kept, marked cancelled)."""
        with self.library.transaction() as db:
            for item_id in item_ids:
                db.execute(
                    "UPDATE batch_items SET status = 'cancelled', updated = ? "
                    "WHERE id = ? AND status = 'pending'",
                    (_now(), item_id),
                )

    def move(self, item_id: int, position: int) -> None:
        """Reorder: put a pending item at `position` among its batch's items."""
        rows = self.library.query("SELECT batch_id FROM batch_items WHERE id = ?", (item_id,))
        if not rows:
            raise BadInputError(f"no queued item {item_id}")
        batch_id = rows[0]["batch_id"]
        order = [i.id for i in self.items(batch_id) if i.id != item_id]
        order.insert(max(0, min(position, len(order))), item_id)
        with self.library.transaction() as db:
            for pos, iid in enumerate(order):
                db.execute("UPDATE batch_items SET position = ? WHERE id = ?", (pos, iid))


# --- running ---------------------------------------------------------------------------------


@dataclass
class BatchEvent:
    """What the runner reports: an item started, finished, failed, or a progress step."""

    kind: str  # "loading" | "started" | "done" | "failed" | "progress"
    items: list[BatchItem]
    take: Any = None
    error: str | None = None
    progress: Any = None
    done: int = 0
    total: int = 0


def group_items(items: Sequence[BatchItem], batch_size: int) -> list[list[BatchItem]]:
    """Chunks that run as one forward pass: same model, same parameters (prompts and seeds
    differ), at most `batch_size` each. Models keep the order they first appear in, so each
    model is loaded once."""
    by_model: dict[str, dict[str, list[BatchItem]]] = {}
    for item in items:
        params = canonical_json(item.request.params())
        by_model.setdefault(item.model, {}).setdefault(params, []).append(item)
    chunks = []
    for groups in by_model.values():
        for group in groups.values():
            for start in range(0, len(group), max(1, batch_size)):
                chunks.append(group[start : start + batch_size])
    return chunks


def run_batch(
    batch_id: str,
    *,
    library: Library,
    service: Any,
    batch_size: int = 4,
    fmt: str | None = None,
    template: str = "{prompt_slug}_{seed}",
    on_event: Callable[[BatchEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> BatchInfo:
    """Run every unfinished item of a batch; returns the batch's state afterwards.

    Ctrl-C or `cancel` stops within one decode step; the interrupted items go back to pending
    and the exception is re-raised. A failing chunk marks its items failed and the batch goes on.
    """
    from samplemind_gen.finishing import finish_take

    queue = BatchQueue(library)
    info = queue.info(batch_id)
    out_dir = Path(info.out_dir) if info.out_dir else None
    todo = queue.items(info.id, ("pending", "running"))
    total = info.total
    done = info.counts.get("done", 0)
    emit = on_event or (lambda event: None)
    queue.set_batch_status(info.id, "running")
    current_model: str | None = None
    try:
        for chunk in group_items(todo, batch_size):
            model = chunk[0].model
            if current_model is not None and model != current_model:
                service.unload()  # one model in memory at a time
            if model != current_model:
                emit(BatchEvent("loading", chunk, done=done, total=total))
            current_model = model
            queue.set_status([i.id for i in chunk], "running")
            emit(BatchEvent("started", chunk, done=done, total=total))

            def progress(p: Any, chunk: list[BatchItem] = chunk, done: int = done) -> None:
                emit(BatchEvent("progress", chunk, progress=p, done=done, total=total))

            try:
                takes = _generate_chunk(
                    service, chunk, library=library, progress=progress, cancel=cancel
                )
                for item, take in zip(chunk, takes, strict=True):
                    take = finish_take(
                        take,
                        out_dir,
                        fmt=fmt,
                        template=template,
                        processing=item.processing,
                        library=library,
                        batch_id=info.id,
                        tags=item.tags,
                    )
                    queue.set_status([item.id], "done", take_id=take.id)
                    done += 1
                    emit(BatchEvent("done", [item], take=take, done=done, total=total))
            except SampleMindError as exc:
                if isinstance(exc, GenerationCancelled):
                    raise
                running = {x.id for x in queue.items(info.id, ("running",))}
                failed = [i for i in chunk if i.id in running]
                queue.set_status([i.id for i in failed], "failed", error=str(exc))
                emit(BatchEvent("failed", failed, error=str(exc), done=done, total=total))
    except (KeyboardInterrupt, GenerationCancelled):
        # Whatever was running goes back in the queue; what finished stays finished.
        unfinished = [i.id for i in queue.items(info.id, ("running",))]
        queue.set_status(unfinished, "pending")
        queue.set_batch_status(info.id, "stopped")
        raise
    final = queue.info(info.id)
    queue.set_batch_status(info.id, "done" if not final.unfinished else "stopped")
    return queue.info(info.id)


def _generate_chunk(
    service: Any,
    chunk: Sequence[BatchItem],
    *,
    library: Library,
    progress: Callable[[Any], None],
    cancel: threading.Event | None,
) -> list[Any]:
    """One forward pass for the chunk's items that the library cannot already answer (each
    looked up with its own post-processing); takes come back in the chunk's order."""
    from samplemind_gen.reuse import REUSED_NOTE, find_reusable

    model = chunk[0].model
    resolved = service.resolve(model)
    long_form: Any = None
    extra: dict[str, Any] = {}
    if chunk[0].request.duration > resolved.spec.max_duration + 1e-9:
        # Beyond the model's window: MusicGen's windowed long-form path (the chunk shares it).
        from samplemind_gen.longform import LongForm, long_form_params

        window = min(30.0, resolved.spec.max_duration)
        long_form = LongForm(window=window, overlap=min(10.0, window / 3))
        extra = long_form_params(long_form)
    found: dict[int, Any] = {}
    for n, item in enumerate(chunk):
        stored = find_reusable(library, service, model, item.request, item.processing, extra)
        if stored is not None:
            take = stored.load()
            take.notes.append(f"{REUSED_NOTE}: {stored.path}")
            take.timings["reused"] = 0.0
            found[n] = take
    missing = [item.request for n, item in enumerate(chunk) if n not in found]
    fresh: list[Any] = []
    if missing and long_form is not None:
        from samplemind_gen.longform import generate_long_blocking

        fresh = generate_long_blocking(
            service, missing, long_form, model=model, on_progress=progress, cancel=cancel
        )
    elif missing:
        fresh = service.generate_blocking(missing, model=model, on_progress=progress, cancel=cancel)
    it = iter(fresh)
    return [found[n] if n in found else next(it) for n in range(len(chunk))]


# --- helpers ---------------------------------------------------------------------------------


def _request_dict(request: GenerationRequest) -> dict[str, Any]:
    data = request.params()
    data["prompt"] = request.prompt
    data["seed"] = request.seed
    return data


def _item(row: Any) -> BatchItem:
    payload = json.loads(row["request_json"])
    request = GenerationRequest(
        **{k: v for k, v in payload["request"].items() if k in REQUEST_FIELDS}
    )
    return BatchItem(
        id=int(row["id"]),
        batch_id=row["batch_id"],
        position=int(row["position"]),
        model=row["model"],
        request=request,
        processing=json.loads(row["processing_json"] or "{}"),
        status=row["status"],
        take_id=row["take_id"],
        error=row["error"],
        tags=tuple(payload.get("tags", ())),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
