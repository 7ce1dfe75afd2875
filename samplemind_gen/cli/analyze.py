"""`samplemind-gen analyze FILE`: tempo, key, loudness and spectrum of an audio file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyse an audio file (tempo, key, loudness, spectrum)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from samplemind_gen.service import analyze_file

    features = analyze_file(args.file)
    data = features.to_dict()
    if args.json:
        print(json.dumps({"path": str(args.file), "features": data}))
        return 0
    print(format_features(data))
    return 0


def format_features(data: dict) -> str:
    def fmt(value: object, unit: str = "", digits: int = 1) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.{digits}f}{unit}"
        return f"{value}{unit}"

    key = f"{data.get('key')} {data.get('mode')}" if data.get("key") else "-"
    rows = [
        ("duration", fmt(data.get("duration"), " s", 2)),
        ("sample rate", fmt(data.get("sample_rate"), " Hz")),
        ("channels", fmt(data.get("channels"))),
        ("tempo", fmt(data.get("tempo_bpm"), " BPM")),
        ("key", key),
        ("loudness", fmt(data.get("lufs"), " LUFS")),
        ("true peak", fmt(data.get("true_peak_dbfs"), " dBTP")),
        ("rms", fmt(data.get("rms_dbfs"), " dBFS")),
        ("centroid", fmt(data.get("spectral_centroid"), " Hz", 0)),
        ("onsets", fmt(data.get("onset_density"), " /s")),
        ("silence", fmt(data.get("silence_ratio"), "", 2)),
    ]
    return "\n".join(f"{name:>12}  {value}" for name, value in rows)
