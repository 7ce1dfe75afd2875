"""Long-form flags for `generate`: beyond 30 s, --continue FILE, --blend PROMPT."""

from __future__ import annotations

import argparse
from typing import Any


def add_longform_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "long-form MusicGen (a --duration beyond the model's 30 s turns it on)"
    )
    g.add_argument("--window", type=float, default=30.0, metavar="SEC", help="window (30)")
    g.add_argument(
        "--overlap",
        type=float,
        default=10.0,
        metavar="SEC",
        help="seconds of each window the next one continues from (10)",
    )
    g.add_argument(
        "--continue",
        dest="continue_from",
        type=str,
        default=None,
        metavar="FILE",
        help="continue an audio file: the take is the file plus --duration seconds more",
    )
    g.add_argument(
        "--continue-seconds",
        type=float,
        default=10.0,
        metavar="SEC",
        help="how much of the file's end the model listens to (10)",
    )
    g.add_argument(
        "--melody",
        default=None,
        metavar="FILE",
        help="condition a musicgen-melody model on the melody of an audio file",
    )
    g.add_argument("--blend", default=None, metavar="PROMPT", help="a second prompt to blend in")
    g.add_argument(
        "--blend-weight",
        type=float,
        default=0.5,
        metavar="W",
        help="0 = only the main prompt, 1 = only --blend (0.5)",
    )


def longform_from_args(args: argparse.Namespace, model: Any) -> Any:
    """A `LongForm` when the request needs the windowed path, else None."""
    from pathlib import Path

    from samplemind_gen.longform import LongForm, check_model

    duration = args.duration if args.duration is not None else 8.0
    wanted = (
        duration > min(args.window, model.spec.max_duration) + 1e-9
        or args.continue_from is not None
        or args.blend is not None
        or args.melody is not None
    )
    if not wanted:
        return None
    check_model(model)
    long = LongForm(
        window=min(args.window, model.spec.max_duration),
        overlap=args.overlap,
        continue_from=str(Path(args.continue_from).expanduser().resolve())
        if args.continue_from
        else None,
        continue_seconds=args.continue_seconds,
        blend_prompt=args.blend,
        blend_weight=args.blend_weight,
        melody=str(Path(args.melody).expanduser().resolve()) if args.melody else None,
    )
    long.validate(model.spec.max_duration)
    return long
