"""Post-processing flags shared by `generate` and `batch` (see `samplemind_gen.dsp`)."""

from __future__ import annotations

import argparse
from typing import Any

from samplemind_gen.errors import BadInputError


def add_processing_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("post-processing (applied before export, in this order)")
    g.add_argument("--trim", action="store_true", help="cut leading/trailing silence (-60 dBFS)")
    g.add_argument(
        "--resample", type=int, default=None, metavar="HZ", help="resample, e.g. 44100 or 48000"
    )
    g.add_argument(
        "--loop-bars",
        type=int,
        default=None,
        metavar="N",
        help="cut a seamless loop of N bars on the beat grid (with --bpm); writes smpl/acid chunks",
    )
    g.add_argument("--bpm", type=float, default=None, help="loop tempo (default: detected)")
    g.add_argument("--beats-per-bar", type=int, default=4, help="loop meter (default 4)")
    g.add_argument(
        "--normalize",
        type=float,
        default=None,
        metavar="LUFS",
        help="normalise integrated loudness, e.g. -14",
    )
    g.add_argument(
        "--true-peak",
        type=float,
        default=-1.0,
        metavar="DBTP",
        help="true-peak ceiling when normalising (default -1)",
    )
    g.add_argument("--fade-in", type=float, default=0.0, metavar="SEC")
    g.add_argument("--fade-out", type=float, default=0.0, metavar="SEC")
    g.add_argument("--no-dither", action="store_true", help="no TPDF dither for 16-bit exports")


def processing_from_args(args: argparse.Namespace, fmt: str | None) -> dict[str, Any]:
    """The `Processing` the flags ask for, as its (canonical) dict; `{}` when none."""
    from samplemind_gen.dsp import Processing

    if args.loop_bars is not None and not 1 <= args.loop_bars <= 64:
        raise BadInputError(f"--loop-bars must be from 1 to 64 (got {args.loop_bars})")
    if args.bpm is not None and not 20 <= args.bpm <= 400:
        raise BadInputError(f"--bpm must be from 20 to 400 (got {args.bpm:g})")
    if args.bpm is not None and args.loop_bars is None:
        raise BadInputError("--bpm sets the loop tempo; add --loop-bars N to cut a loop")
    if not 1 <= args.beats_per_bar <= 16:
        raise BadInputError("--beats-per-bar must be from 1 to 16")
    if args.normalize is not None and not -70 <= args.normalize <= 0:
        raise BadInputError(
            f"--normalize takes a loudness from -70 to 0 LUFS (got {args.normalize})"
        )
    if not -20 <= args.true_peak <= 0:
        raise BadInputError(f"--true-peak must be from -20 to 0 dBTP (got {args.true_peak})")
    if args.fade_in < 0 or args.fade_out < 0:
        raise BadInputError("fades are 0 seconds or longer")
    if args.resample is not None and not 8000 <= args.resample <= 192000:
        raise BadInputError("--resample takes a rate from 8000 to 192000 Hz, e.g. 48000")
    steps = Processing(
        trim=args.trim,
        resample=args.resample,
        loop_bars=args.loop_bars,
        bpm=args.bpm,
        beats_per_bar=args.beats_per_bar,
        normalize_lufs=args.normalize,
        true_peak_db=args.true_peak,
        fade_in=args.fade_in,
        fade_out=args.fade_out,
        dither_bits=16 if fmt == "wav16" and not args.no_dither else None,
    )
    return steps.to_dict()


def loop_duration(args: argparse.Namespace, max_duration: float) -> float | None:
    """The duration to generate for a loop when --duration is not given."""
    from samplemind_gen.dsp import loop_source_seconds

    if args.loop_bars is None or args.bpm is None:
        return None
    needed = loop_source_seconds(args.bpm, args.loop_bars, args.beats_per_bar)
    if needed > max_duration + 1e-9:
        raise BadInputError(
            f"{args.loop_bars} bars at {args.bpm:g} BPM need {needed:.1f} s of audio, beyond this "
            f"model's {max_duration:g} s; use fewer bars or a faster tempo"
        )
    return round(needed, 3)
