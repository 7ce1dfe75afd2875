"""`samplemind-gen`: with no arguments opens the terminal app; subcommands run the core.

Only argparse and our light modules are imported here, so `--help` returns at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from samplemind_gen import __version__
from samplemind_gen.errors import SampleMindError


def build_parser() -> argparse.ArgumentParser:
    from samplemind_gen.cli import analyze, generate, tui

    parser = argparse.ArgumentParser(
        prog="samplemind-gen",
        description=(
            "Offline-first neural audio generation for music producers. Run with no arguments "
            "to open the terminal app."
        ),
    )
    parser.add_argument("--version", action="version", version=f"samplemind-gen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate.add_parser(sub)
    analyze.add_parser(sub)
    tui.add_parser(sub)
    for module_name in ("models", "library", "batch", "doctor"):
        module = _optional_module(module_name)
        if module is not None:
            module.add_parser(sub)
    return parser


def _optional_module(name: str):  # type: ignore[no-untyped-def]
    import importlib

    try:
        return importlib.import_module(f"samplemind_gen.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"samplemind_gen.cli.{name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    from samplemind_gen.devices import keep_cpu_threads_warm

    keep_cpu_threads_warm()  # before torch is imported anywhere
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        from samplemind_gen.cli import tui

        return tui.run(args)
    from samplemind_gen.cli import interrupts

    interrupts.install()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130
    except SampleMindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an unexpected runtime failure: one line, exit 1
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
