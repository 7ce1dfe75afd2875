"""`samplemind-gen batch FILE`: many takes from a prompt file, resumable after a stop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from samplemind_gen.errors import BadInputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from samplemind_gen.cli.generate import add_generation_options

    p = sub.add_parser(
        "batch",
        help="generate a batch of takes from a prompt file (.txt, .jsonl, .toml); resumable",
        description=(
            "Queue every prompt of FILE in the library database and generate them, grouped by "
            "model and parameters (one batched forward pass per group). Stopped by Ctrl-C or a "
            "crash? `batch --resume` carries on; finished takes are never redone."
        ),
    )
    p.add_argument("file", nargs="?", type=Path, help="prompt file: .txt, .jsonl or .toml")
    add_generation_options(p)
    p.add_argument("--seed", type=int, default=None, help="seed for items without their own")
    p.add_argument("--variations", type=int, default=1, help="takes per prompt (new seeds)")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for the batch's files")
    p.add_argument("--batch-size", type=int, default=4, help="takes per forward pass (default 4)")
    p.add_argument("--resume", action="store_true", help="carry on with an unfinished batch")
    p.add_argument("--batch", dest="batch_id", default=None, help="the batch id to resume")
    p.add_argument("--list", action="store_true", help="list batches and their progress")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from samplemind_gen.batch import BatchQueue
    from samplemind_gen.library import Library

    with Library() as library:
        queue = BatchQueue(library)
        if args.list:
            return _list(queue, args.json)
        batch_id = None
        if args.resume or args.batch_id:
            batch_id = _find_resumable(queue, args)
            if batch_id is None and args.file is None:
                raise BadInputError("no unfinished batch to resume; start one with `batch FILE`")
        if batch_id is None:
            if args.file is None:
                raise BadInputError("give a prompt file: `samplemind-gen batch prompts.txt`")
            batch_id = _create(queue, args)
        return _run(queue, library, batch_id, args)


def _find_resumable(queue: Any, args: argparse.Namespace) -> str | None:
    if args.batch_id:
        info = queue.info(args.batch_id)
        return str(info.id)
    source = str(args.file.resolve()) if args.file is not None else None
    info = queue.latest_unfinished(source)
    if info is None and args.file is not None:
        print(f"note: no unfinished batch from {args.file}; starting a new one", file=sys.stderr)
    return info.id if info is not None else None


def _create(queue: Any, args: argparse.Namespace) -> str:
    import uuid

    from samplemind_gen import paths
    from samplemind_gen.batch import read_batch_file
    from samplemind_gen.catalog import DEFAULT_MODEL, resolve_model
    from samplemind_gen.cli.generate import request_from_args
    from samplemind_gen.cli.processing import loop_duration, processing_from_args
    from samplemind_gen.request import validate_request

    if not 1 <= args.variations <= 64:
        raise BadInputError("--variations must be from 1 to 64")
    if not 1 <= args.batch_size <= 64:
        raise BadInputError("--batch-size must be from 1 to 64")
    if args.fmt is not None:
        from samplemind_gen.export import parse_format

        args.fmt = parse_format(args.fmt)
    default_model = resolve_model(args.model or DEFAULT_MODEL)
    processing = processing_from_args(args, args.fmt)
    if args.duration is None:
        args.duration = loop_duration(args, default_model.spec.max_duration)
    defaults = request_from_args(args, "-", args.seed)
    specs = read_batch_file(args.file, defaults)
    models: dict[str, Any] = {}
    for spec in specs:
        name = spec.model or _model_key(default_model)
        if name not in models:
            models[name] = resolve_model(name)
        validate_request(spec.request, max_duration=_limit(models[name]))
    batch_id = uuid.uuid4().hex[:10]
    out_dir = args.out_dir or (paths.export_dir() / f"batch-{batch_id}")
    paths.ensure_writable_dir(out_dir)
    queue.create(
        [
            spec if spec.model is None else _with_model(spec, _model_key(models[spec.model]))
            for spec in specs
        ],
        batch_id=batch_id,
        default_model=_model_key(default_model),
        variations=args.variations,
        source=str(args.file.resolve()),
        out_dir=out_dir.resolve(),
        base_processing=processing,
        options={
            "device": args.device,
            "dtype": args.dtype,
            "quantize": args.quantize,
            "fmt": args.fmt,
            "template": args.template,
            "batch_size": args.batch_size,
        },
    )
    return batch_id


def _limit(resolved: Any) -> float:
    """Text-only MusicGen goes beyond its window (long-form); other models stop at theirs."""
    spec = resolved.spec
    if spec.family == "musicgen" and not spec.melody:
        from samplemind_gen.longform import MAX_LONG_DURATION

        return MAX_LONG_DURATION
    return float(spec.max_duration)


def _model_key(resolved: Any) -> str:
    return str(resolved.local_path) if resolved.local_path else str(resolved.spec.name)


def _with_model(spec: Any, model: str) -> Any:
    from dataclasses import replace

    return replace(spec, model=model)


def _run(queue: Any, library: Any, batch_id: str, args: argparse.Namespace) -> int:
    from samplemind_gen.batch import BatchEvent, run_batch
    from samplemind_gen.cli.progress import ProgressLine
    from samplemind_gen.engines.base import LoadOptions
    from samplemind_gen.reuse import was_reused
    from samplemind_gen.service import AudioEngineWithGeneration

    info = queue.info(batch_id)
    options = info.options
    service = AudioEngineWithGeneration(
        LoadOptions(
            device=options.get("device", "auto"),
            dtype=options.get("dtype", "auto"),
            quantize=options.get("quantize"),
        )
    )
    progress = ProgressLine()
    takes: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    print(
        f"batch {info.id}: {info.unfinished} of {info.total} takes to make -> {info.out_dir}",
        file=sys.stderr,
    )

    def on_event(event: BatchEvent) -> None:
        if event.kind == "progress" and event.progress is not None:
            progress(event.progress)
        elif event.kind == "loading":
            progress.done()
            print(f"loading {event.items[0].model}", file=sys.stderr)
        elif event.kind == "done" and event.take is not None:
            progress.done()
            take = event.take
            takes.append({**take.summary(), "item": event.items[0].id})
            how = " (from the library)" if was_reused(take) else ""
            print(
                f"[{event.done}/{event.total}] {take.path}  seed {take.seed}{how}", file=sys.stderr
            )
        elif event.kind == "failed":
            progress.done()
            for item in event.items:
                failed.append({**item.summary(), "error": event.error})
            print(f"failed: {event.error}", file=sys.stderr)

    try:
        final = run_batch(
            info.id,
            library=library,
            service=service,
            batch_size=int(options.get("batch_size", 4)),
            fmt=options.get("fmt"),
            template=options.get("template") or "{prompt_slug}_{seed}",
            on_event=on_event,
        )
    except KeyboardInterrupt:
        progress.done()
        print(
            f"\nbatch {info.id} stopped; `samplemind-gen batch --resume` carries on",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.done()
    if args.json:
        print(json.dumps({**final.summary(), "takes": takes, "failed": failed}))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(final.counts.items()))
        print(f"batch {final.id}: {counts} -> {final.out_dir}")
    return 1 if final.counts.get("failed") else 0


def _list(queue: Any, as_json: bool) -> int:
    batches = queue.batches()
    if as_json:
        print(json.dumps({"batches": [b.summary() for b in batches]}))
        return 0
    if not batches:
        print("no batches yet")
    for b in batches:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(b.counts.items()))
        print(f"{b.id}  {b.created}  {b.status:<8} {counts}  {b.source or ''}")
    return 0
