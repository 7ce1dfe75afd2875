"""`samplemind-gen models list | download | remove | info | verify | import`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from samplemind_gen.errors import BadInputError, ModelFilesError
from samplemind_gen.store.progress import ByteProgress, describe_bytes, format_bytes


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `models` and its actions to the top-level subcommands."""
    p = subparsers.add_parser(
        "models",
        help="list, download, verify, import and remove models",
        description="Models live in the Hugging Face cache (HF_HOME / HF_HUB_CACHE) or are "
        "imported from folders; once there, they work offline.",
    )
    actions = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="the catalog and what this machine holds")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.set_defaults(handler=run_list)

    a = actions.add_parser("download", help="download a model (resumes an interrupted one)")
    a.add_argument("name", help="catalog name or Hub repo id")
    a.set_defaults(handler=run_download)

    a = actions.add_parser("remove", help="delete a downloaded or imported model")
    a.add_argument("name")
    a.set_defaults(handler=run_remove)

    a = actions.add_parser("info", help="details of a model: revision, files, sizes")
    a.add_argument("name")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(handler=run_info)

    a = actions.add_parser("verify", help="re-hash a model's files against the Hub's hashes")
    a.add_argument("name")
    a.set_defaults(handler=run_verify)

    a = actions.add_parser(
        "import", help="copy a checkpoint folder into the store (for offline machines)"
    )
    a.add_argument("path", type=Path, help="a Hugging Face checkpoint folder")
    a.add_argument("--as", dest="as_name", required=True, metavar="NAME", help="name to use")
    a.add_argument("--link", action="store_true", help="register the folder in place, no copy")
    a.set_defaults(handler=run_import)


add_parser = add_models_parser  # the name cli.main looks for


class ByteBar:
    """A one-line byte progress bar on stderr: redrawn on a terminal; otherwise (logs, CI) one
    line per tenth of the bytes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._width = 0
        self._tenth = -1

    def __call__(self, progress: ByteProgress) -> None:
        text = describe_bytes(progress)
        if self.tty:
            filled = int(round(progress.fraction * 24))
            line = f"[{'#' * filled}{'-' * (24 - filled)}] {text}"
            self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
            self._width = len(line)
        else:
            tenth = int(progress.fraction * 10)
            if tenth == self._tenth:
                return
            self._tenth = tenth
            self.stream.write(f"{progress.task} {progress.model}: {text}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _status_json(status: Any) -> dict[str, Any]:
    spec = status.spec
    return {
        "name": status.name,
        "repo_id": spec.repo_id,
        "family": spec.family,
        "kind": spec.kind,
        "state": status.state,
        "commit": status.commit,
        "pinned_revision": spec.revision,
        "path": str(status.path) if status.path else None,
        "size_bytes": status.size_bytes,
        "download_bytes": spec.download_bytes,
        "gated": spec.gated,
        "licence": spec.licence,
        "in_catalog": status.in_catalog,
        "imported": status.imported,
        "description": spec.description,
    }


def _state_label(status: Any) -> str:
    if status.state == "cached":
        return f"cached ({status.commit[:12]})"
    if status.state == "partial":
        return f"partial ({format_bytes(status.size_bytes)})" if status.size_bytes else "partial"
    if status.state == "missing":
        return "-"
    return status.state


def run_list(args: argparse.Namespace) -> int:
    from samplemind_gen.store import list_models

    statuses = list_models()
    if args.json:
        print(json.dumps([_status_json(s) for s in statuses], indent=2))
        return 0
    rows = [("NAME", "KIND", "SIZE", "STATE", "NOTES")]
    for s in statuses:
        size = s.size_bytes if s.usable and s.size_bytes else s.spec.download_bytes
        notes = []
        if s.spec.gated:
            notes.append("gated")
        if s.spec.revision:
            notes.append(f"pinned {s.spec.revision[:12]}")
        if not s.in_catalog:
            notes.append(s.spec.description)
        rows.append((s.name, s.spec.kind, format_bytes(size), _state_label(s), ", ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4])
    return 0


def _resolve(name: str):  # type: ignore[no-untyped-def]
    from samplemind_gen.catalog import resolve_model

    return resolve_model(name)


def run_download(args: argparse.Namespace) -> int:
    from samplemind_gen.store import hub_offline, model_status
    from samplemind_gen.store.download import download_model

    model = _resolve(args.name)
    if model.local_path is not None:
        raise BadInputError(
            f"{args.name} is a local folder ({model.local_path}); nothing to download"
        )
    bar = ByteBar()
    try:
        path, commit = download_model(model.spec, on_progress=bar)
    finally:
        bar.done()
    status = model_status(model)
    note = " (offline: not checked for a newer revision)" if hub_offline() else ""
    print(
        f"{model.spec.name}: ready at commit {commit[:12]}, "
        f"{format_bytes(status.size_bytes)} in {path}{note}"
    )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from samplemind_gen.store import remove_model

    model = _resolve(args.name)
    freed = remove_model(model)
    print(f"removed {model.spec.name} ({format_bytes(freed)} freed)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from samplemind_gen.store import model_status
    from samplemind_gen.store.importer import imported_model
    from samplemind_gen.store.integrity import load_manifest

    model = _resolve(args.name)
    status = model_status(model)
    data = _status_json(status)
    data.update(
        params=model.spec.params,
        sample_rate=model.spec.sample_rate,
        channels=model.spec.channels,
        max_duration=model.spec.max_duration,
    )
    manifest = load_manifest(model.spec.repo_id, status.commit) if status.commit else None
    if manifest is not None and status.state != "imported":
        data["downloaded_at"] = manifest.downloaded_at
        data["endpoint"] = manifest.endpoint
        data["revision"] = manifest.revision
        data["files"] = {p: f.size for p, f in sorted(manifest.files.items())}
        data["damaged"] = sorted(manifest.damaged)
    imported = imported_model(model.spec.name)
    if imported is not None:
        data["imported_from"] = imported.source
        data["imported_at"] = imported.imported_at
        data["linked"] = imported.linked
        if status.state == "imported":
            data["files"] = {f.path: f.size for f in imported.files}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    labels = [
        ("name", data["name"]),
        ("repo", data["repo_id"]),
        ("family", f"{data['family']} ({data['kind']})"),
        ("description", data["description"]),
        ("licence", data["licence"] + (" (gated: accept it on the Hub)" if data["gated"] else "")),
        ("pinned revision", data["pinned_revision"] or "none (main)"),
        ("state", status.state),
        ("commit", data["commit"] or "-"),
        ("path", data["path"] or "-"),
        ("size", format_bytes(status.size_bytes) if status.size_bytes else "-"),
        ("download size", format_bytes(model.spec.download_bytes)),
    ]
    if "downloaded_at" in data:
        labels.append(
            ("downloaded", f"{data['downloaded_at'] or 'not finished'} from {data['endpoint']}")
        )
    if "imported_from" in data:
        labels.append(
            ("imported from", f"{data['imported_from']}{' (linked)' if data['linked'] else ''}")
        )
    if data.get("damaged"):
        labels.append(("damaged", ", ".join(data["damaged"])))
    width = max(len(k) for k, _ in labels)
    for k, v in labels:
        print(f"{k.ljust(width)}  {v}")
    for name, size in data.get("files", {}).items():
        print(f"{'':{width}}  {format_bytes(size):>9}  {name}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from samplemind_gen.store import verify_model

    model = _resolve(args.name)
    bar = ByteBar()
    try:
        report = verify_model(model, on_progress=bar)
    finally:
        bar.done()
    where = f" at commit {report.commit[:12]}" if report.commit else ""
    print(
        f"{report.name}{where}: {len(report.ok)} files OK, {format_bytes(report.bytes_checked)} "
        "checked"
    )
    for d in report.damaged:
        print(f"  damaged: {d.path} ({d.reason})")
    for path in report.missing:
        print(f"  missing: {path}")
    for path in report.unchecked:
        print(f"  no recorded hash: {path}")
    if not report.healthy:
        n = len(report.damaged) + len(report.missing)
        fix = (
            f"run `samplemind-gen models download {report.name}` to fetch them again"
            if report.source == "cache"
            else f"remove it and import it again from {report.path}"
        )
        raise ModelFilesError(f"{report.name} has {n} damaged or missing file(s); {fix}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from samplemind_gen.store.importer import import_model

    bar = ByteBar()
    try:
        model = import_model(args.path, args.as_name, link=args.link, on_progress=bar)
    finally:
        bar.done()
    how = "linked" if model.linked else "copied"
    print(
        f"imported {model.name} ({model.family}, {len(model.files)} files, "
        f"{format_bytes(model.size_bytes)}) {how} at {model.path}; use it with --model {model.name}"
    )
    return 0
