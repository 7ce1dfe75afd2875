"""`samplemind-gen tui`: open the terminal app."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the terminal app (the default with no command)")
    p.add_argument("--model", help="model to start with (catalog name, Hub repo id or folder)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from samplemind_gen.tui.app import SampleMindApp
    except ModuleNotFoundError:  # the TUI is not installed in this build
        from samplemind_gen.cli.main import build_parser

        build_parser().print_help()
        return 0
    app = SampleMindApp(model=getattr(args, "model", None))
    app.run()
    return int(app.return_code or 0)
