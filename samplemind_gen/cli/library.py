"""`samplemind-gen library ...`: list, search, rate, tag, export sample packs, delete, restore."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from samplemind_gen.errors import BadInputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("library", help="browse, search, rate and export the takes you made")
    actions = p.add_subparsers(dest="library_command", metavar="ACTION")
    p.set_defaults(handler=lambda args: _usage(p))

    ls = actions.add_parser("list", help="list takes, newest first, with filters")
    add_filter_options(ls)
    ls.add_argument("--sort", choices=["newest", "oldest", "rating", "bpm"], default="newest")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (0 = all)")
    ls.add_argument("--json", action="store_true", help="print JSON on stdout")
    ls.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="everything about one take")
    show.add_argument("id", help="take id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)

    rate = actions.add_parser("rate", help="rate a take 1-5 stars (0 clears)")
    rate.add_argument("id")
    rate.add_argument("stars", type=int)
    rate.add_argument("--json", action="store_true")
    rate.set_defaults(handler=run_rate)

    fav = actions.add_parser("fav", help="mark a take as a favourite (--off to unmark)")
    fav.add_argument("id")
    fav.add_argument("--off", action="store_true")
    fav.add_argument("--json", action="store_true")
    fav.set_defaults(handler=run_fav)

    tag = actions.add_parser("tag", help="add tags to a take (--remove to take them off)")
    tag.add_argument("id")
    tag.add_argument("tags", nargs="+")
    tag.add_argument("--remove", action="store_true")
    tag.add_argument("--json", action="store_true")
    tag.set_defaults(handler=run_tag)

    ex = actions.add_parser(
        "export", help="export takes as a sample pack (files + playlist + CSV/JSON index)"
    )
    ex.add_argument("ids", nargs="*", help="take ids; without ids, every take the filters match")
    add_filter_options(ex)
    ex.add_argument("--to", dest="to", type=Path, required=True, help="the pack folder")
    ex.add_argument("--format", dest="fmt", default=None, help="convert: wav16, wav24, flac, ...")
    ex.add_argument("--name", default="{prompt_slug}_{seed}", help="file name template")
    ex.add_argument("--no-number", action="store_true", help="no 01_, 02_ prefixes")
    ex.add_argument("--title", default=None, help="playlist title")
    ex.add_argument("--sort", choices=["newest", "oldest", "rating", "bpm"], default="oldest")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(handler=run_export)

    rm = actions.add_parser("delete", help="move takes to the trash (recoverable with restore)")
    rm.add_argument("ids", nargs="+")
    rm.add_argument("--json", action="store_true")
    rm.set_defaults(handler=run_delete)

    back = actions.add_parser("restore", help="bring takes back from the trash")
    back.add_argument("ids", nargs="+")
    back.add_argument("--json", action="store_true")
    back.set_defaults(handler=run_restore)

    for name, text in (
        ("reroll", "make a take again with its recipe and a new seed"),
        ("regenerate", "make a take again exactly: same recipe, same seed, same device/dtype"),
    ):
        again = actions.add_parser(name, help=text)
        again.add_argument("id")
        again.add_argument(
            "--output", "-o", type=Path, default=None, help="folder (default: the original's)"
        )
        again.add_argument("--json", action="store_true")
        again.set_defaults(handler=run_remake, exact=name == "regenerate")

    trash = actions.add_parser("trash", help="list the trash (--empty deletes it for good)")
    trash.add_argument("--empty", action="store_true")
    trash.add_argument("--json", action="store_true")
    trash.set_defaults(handler=run_trash)


def add_filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--search", "-s", default=None, help="words in the prompt or tags")
    p.add_argument("--model", default=None, help="part of the model name")
    p.add_argument("--key", default=None, help="e.g. 'A minor', Am, F#")
    p.add_argument("--bpm", default=None, metavar="MIN:MAX", help="tempo range, e.g. 120:128")
    p.add_argument("--lufs", default=None, metavar="MIN:MAX", help="loudness range, e.g. -16:-8")
    p.add_argument("--min-rating", type=int, default=None, help="at least this many stars")
    p.add_argument("--favourites", action="store_true", help="favourites only")
    p.add_argument("--tag", action="append", default=[], help="has this tag (repeatable)")
    p.add_argument("--batch", default=None, help="takes of one batch")


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def parse_range(text: str | None, what: str) -> tuple[float | None, float | None]:
    """ "120:128" -> (120, 128); "120" -> (120, 120); ":-10" -> (None, -10)."""
    if text is None:
        return None, None
    parts = text.split(":")
    try:
        if len(parts) == 1:
            value = float(parts[0])
            return value, value
        if len(parts) == 2:
            low = float(parts[0]) if parts[0].strip() else None
            high = float(parts[1]) if parts[1].strip() else None
            return low, high
    except ValueError:
        pass
    raise BadInputError(f"--{what} takes MIN:MAX (either side may be empty), got {text!r}")


def filter_from_args(args: argparse.Namespace, **overrides: Any):  # type: ignore[no-untyped-def]
    from samplemind_gen.library import TakeFilter

    bpm_min, bpm_max = parse_range(args.bpm, "bpm")
    lufs_min, lufs_max = parse_range(args.lufs, "lufs")
    values: dict[str, Any] = {
        "text": args.search,
        "model": args.model,
        "key": args.key,
        "bpm_min": bpm_min,
        "bpm_max": bpm_max,
        "lufs_min": lufs_min,
        "lufs_max": lufs_max,
        "rating_min": args.min_rating,
        "favourite": True if args.favourites else None,
        "tags": tuple(args.tag),
        "batch_id": args.batch,
    }
    values.update(overrides)
    return TakeFilter(**values)


def _library():  # type: ignore[no-untyped-def]
    from samplemind_gen.library import Library

    return Library()


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False))


def format_row(entry) -> str:  # type: ignore[no-untyped-def]
    stars = "*" * (entry.rating or 0)
    fav = "♥" if entry.favourite else " "
    bpm = f"{entry.tempo_bpm:5.1f}" if entry.tempo_bpm is not None else "    -"
    key = entry.key_label or "-"
    lufs = f"{entry.lufs:6.1f}" if entry.lufs is not None else "     -"
    model = entry.recipe.model.rstrip("/").rsplit("/", 1)[-1][:20]
    prompt = entry.prompt if len(entry.prompt) <= 40 else entry.prompt[:39] + "…"
    return (
        f"{entry.id}  {stars:<5} {fav} {entry.recipe.duration:5.1f}s {bpm} {key:<8} {lufs}  "
        f"{model:<20} {prompt}"
    )


def run_list(args: argparse.Namespace) -> int:
    limit = None if args.limit == 0 else args.limit
    with _library() as lib:
        where = filter_from_args(args, order=args.sort, limit=limit)
        entries = lib.find(where)
        total = lib.count(filter_from_args(args))
    if args.json:
        _print_json({"total": total, "takes": [e.summary() for e in entries]})
        return 0
    if not entries:
        print("no takes match")
        return 0
    print(
        f"{'id':<12}  {'stars':<5}   {'len':>6} {'bpm':>5} {'key':<8} {'lufs':>6}  "
        f"{'model':<20} prompt"
    )
    for entry in entries:
        print(format_row(entry))
    if total > len(entries):
        print(f"… {total - len(entries)} more (use --limit 0 for all)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with _library() as lib:
        entry = lib.get(args.id)
    data = entry.summary()
    if args.json:
        _print_json(data)
        return 0
    rows = [
        ("id", entry.id),
        ("prompt", entry.prompt),
        ("model", f"{entry.recipe.model} @ {entry.recipe.revision or 'local'}"),
        ("seed", entry.seed),
        ("device", f"{entry.recipe.device} {entry.recipe.dtype}"),
        ("kernels", entry.recipe.kernels or "not recorded"),
        ("created", entry.created),
        ("file", f"{entry.path}{' (in the trash)' if entry.deleted else ''}"),
        ("rating", "*" * (entry.rating or 0) or "-"),
        ("favourite", "yes" if entry.favourite else "no"),
        ("tags", ", ".join(entry.tags) or "-"),
        ("params", json.dumps(entry.recipe.params, sort_keys=True)),
    ]
    if entry.processing:
        rows.append(("processing", json.dumps(entry.processing, sort_keys=True)))
    for name, value in rows:
        print(f"{name:>12}  {value}")
    if entry.features:
        from samplemind_gen.cli.analyze import format_features

        print(format_features(entry.features))
    return 0


def _one(args: argparse.Namespace, entry) -> int:  # type: ignore[no-untyped-def]
    if args.json:
        _print_json(entry.summary())
    else:
        print(format_row(entry))
    return 0


def run_rate(args: argparse.Namespace) -> int:
    with _library() as lib:
        return _one(args, lib.rate(args.id, args.stars))


def run_fav(args: argparse.Namespace) -> int:
    with _library() as lib:
        return _one(args, lib.set_favourite(args.id, not args.off))


def run_tag(args: argparse.Namespace) -> int:
    with _library() as lib:
        if args.remove:
            entry = lib.tag(args.id, remove=args.tags)
        else:
            entry = lib.tag(args.id, add=args.tags)
    return _one(args, entry)


def run_export(args: argparse.Namespace) -> int:
    from samplemind_gen.pack import export_pack

    with _library() as lib:
        if args.ids:
            entries = [lib.get(i, include_deleted=False) for i in args.ids]
        else:
            entries = lib.find(filter_from_args(args, order=args.sort))
    pack = export_pack(
        entries,
        args.to,
        name_template=args.name,
        fmt=args.fmt,
        numbered=not args.no_number,
        title=args.title,
    )
    if args.json:
        _print_json(pack.summary())
    else:
        print(f"{len(pack.files)} takes -> {pack.folder} (playlist.m3u, index.csv, index.json)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with _library() as lib:
        entries = [lib.delete(i) for i in args.ids]
    if args.json:
        _print_json({"deleted": [e.summary() for e in entries]})
    else:
        for e in entries:
            print(f"{e.id} moved to the trash ({e.trash_path}); `library restore {e.id}` undoes it")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    with _library() as lib:
        entries = [lib.restore(i) for i in args.ids]
    if args.json:
        _print_json({"restored": [e.summary() for e in entries]})
    else:
        for e in entries:
            print(f"{e.id} restored to {e.path}")
    return 0


def run_trash(args: argparse.Namespace) -> int:
    from samplemind_gen.library import TakeFilter

    with _library() as lib:
        if args.empty:
            count = lib.empty_trash()
            if args.json:
                _print_json({"removed": count})
            else:
                print(f"removed {count} takes for good")
            return 0
        entries = lib.find(TakeFilter(deleted=True))
    if args.json:
        _print_json({"takes": [e.summary() for e in entries]})
    else:
        for entry in entries:
            print(format_row(entry))
        if not entries:
            print("the trash is empty")
    return 0


def run_remake(args: argparse.Namespace) -> int:
    import sys

    from samplemind_gen.cli.progress import ProgressLine
    from samplemind_gen.engines.base import LoadOptions
    from samplemind_gen.remake import remake_take
    from samplemind_gen.service import AudioEngineWithGeneration

    with _library() as lib:
        entry = lib.get(args.id, include_deleted=False)
        dtype, _, quantize = entry.recipe.dtype.partition("+")
        options = LoadOptions(device=entry.recipe.device, dtype=dtype, quantize=quantize or None)
        service = AudioEngineWithGeneration(options)
        progress = ProgressLine()
        try:
            take = remake_take(
                service,
                lib,
                entry,
                new_seed=not args.exact,
                destination=args.output,
                on_progress=progress,
            )
        finally:
            progress.done()
        stored = lib.get(take.id)
    for note in take.notes:
        print(f"warning: {note}", file=sys.stderr)
    return _one(args, stored)
