"""`samplemind-gen tui`: open the terminal app."""

from __future__ import annotations

import argparse

from samplemind_gen.devices import QUANTIZE_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the terminal app (the default with no command)")
    p.add_argument("--model", help="model to start with (catalog name, Hub repo id or folder)")
    p.add_argument(
        "--quantize",
        choices=[*QUANTIZE_MODES, "none"],
        default=None,
        help="MusicGen decoder weights on CPU (remembered): int8, int4, or none for the default",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from samplemind_gen.tui.app import SampleMindApp
    except ModuleNotFoundError:  # the TUI is not installed in this build
        from samplemind_gen.cli.main import build_parser

        build_parser().print_help()
        return 0
    from samplemind_gen.settings import Settings

    settings = Settings.load()
    quantize = getattr(args, "quantize", None)
    if quantize is not None:
        settings.quantize = None if quantize == "none" else quantize
        settings.save()
    app = SampleMindApp(model=getattr(args, "model", None), settings=settings)
    app.run()
    return int(app.return_code or 0)
