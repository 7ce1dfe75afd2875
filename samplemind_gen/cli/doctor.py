"""`samplemind-gen doctor`: what this machine runs samplemind-gen on, and how fast a path."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this machine runs on: device, CPU kernels, MusicGen's modes, audio, folders",
        description=(
            "Versions, the device, the CPU's instruction sets, whether samplemind-gen's CPU "
            "kernels are built (compiling them once if needed) and which kernels each MusicGen "
            "mode runs on here, audio output and the folders in use. Paste it into bug reports."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from samplemind_gen.doctor import report
    from samplemind_gen.engines import native_kernels

    if not args.json and native_kernels.will_compile():
        print("compiling CPU kernels (once, ~20 s)", file=sys.stderr, flush=True)
    data = report()
    if args.json:
        print(json.dumps(data))
        return 0
    print(format_report(data))
    return 0


def format_report(data: dict) -> str:
    v = data["versions"]
    lines = [
        " · ".join(f"{name} {version}" for name, version in v.items() if version is not None),
        "",
    ]
    cpu = data["cpu"]
    kernels = data["kernels"]
    if kernels["built"]:
        amx = f" · AMX {kernels['amx']}" if kernels["amx"] else ""
        kernel_line = f"samplemind {kernels['isa']}{amx} (cached in {kernels['cache']})"
    else:
        kernel_line = f"not used: {kernels['why']} (PyTorch's kernels instead, ~1.4x slower)"
    rows = [("device", data["device"])]
    if "gpu" in data:
        rows.append(("GPU", f"{data['gpu']['name']} · {data['gpu']['memory_gb']} GB"))
    rows += [
        ("CPU", f"{cpu['name']} · {cpu['cores']} cores · {cpu['torch_threads']} torch threads"),
        ("instructions", " ".join(cpu["flags"]) or "none of AVX2 / AVX-512 / AMX"),
        ("CPU kernels", kernel_line),
    ]
    for i, (mode, path) in enumerate(data["musicgen"].items()):
        label = {"default": "default", "float32": "--dtype float32"}.get(mode, f"--quantize {mode}")
        note = f" ({path['note']})" if path["note"] else ""
        rows.append(
            ("MusicGen" if i == 0 else "", f"{label}: {path['dtype']} on {path['kernels']}{note}")
        )
    rows += [
        ("audio output", "yes" if data["audio_output"] else "none found: takes still export"),
        ("library", data["paths"]["library"]),
        ("exports", data["paths"]["exports"]),
        ("models", data["paths"]["models"] + (" (offline)" if data["offline"] else "")),
    ]
    width = max(len(label) for label, _ in rows)
    lines += [f"{label:>{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
