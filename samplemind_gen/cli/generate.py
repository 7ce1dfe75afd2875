"""`samplemind-gen generate PROMPT`: make a take, analyse it, export it with its recipe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from samplemind_gen.devices import QUANTIZE_MODES
from samplemind_gen.errors import BadInputError


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `generate` and `batch`."""
    p.add_argument("--model", default=None, help="catalog name, Hub repo id or local folder")
    p.add_argument("--duration", type=float, default=None, help="seconds of audio (default 8)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=250, help="0 turns top-k off")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1]")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default 3)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (diffusion models)")
    p.add_argument("--negative-prompt", default=None, help="what to avoid (diffusion models)")
    p.add_argument("--scheduler", choices=["fast", "quality"], default="fast")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        default=None,
        help="MusicGen decoder weights on CPU: int8 (fast, close to bf16) or int4 (fastest, "
        "lossy: check by ear)",
    )
    p.add_argument(
        "--format", dest="fmt", default=None, help="wav, wav16, wav24, wav32f, flac, ogg"
    )
    p.add_argument("--template", default="{prompt_slug}_{seed}", help="file name template")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    from samplemind_gen.cli.processing import add_processing_options

    add_processing_options(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a take from a text prompt")
    p.add_argument("prompt", nargs="+", help="one or more prompts (several run as one batch)")
    add_generation_options(p)
    p.add_argument("--seed", type=int, default=None, help="0..4294967295; random when unset")
    p.add_argument("--variations", type=int, default=1, help="takes per prompt, new seeds")
    p.add_argument("--output", "-o", type=Path, default=None, help="file or folder")
    p.add_argument("--play", action="store_true", help="play the take when it is ready")
    from samplemind_gen.cli.longform import add_longform_options

    add_longform_options(p)
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="generate again even if the library holds a take with this exact recipe and seed",
    )
    p.set_defaults(handler=run)


def request_from_args(args: argparse.Namespace, prompt: str, seed: int | None):  # type: ignore[no-untyped-def]
    from samplemind_gen.request import GenerationRequest

    kwargs = {
        "prompt": prompt,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": seed,
        "steps": args.steps,
        "negative_prompt": args.negative_prompt,
        "scheduler": args.scheduler,
    }
    if args.duration is not None:
        kwargs["duration"] = args.duration
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    return GenerationRequest(**kwargs)


def run(args: argparse.Namespace) -> int:
    from samplemind_gen import paths
    from samplemind_gen.catalog import DEFAULT_MODEL, resolve_model
    from samplemind_gen.cli import interrupts
    from samplemind_gen.cli.longform import longform_from_args
    from samplemind_gen.cli.processing import loop_duration, processing_from_args
    from samplemind_gen.cli.progress import ProgressLine
    from samplemind_gen.engines.base import LoadOptions
    from samplemind_gen.finishing import finish_take, open_library
    from samplemind_gen.longform import MAX_LONG_DURATION
    from samplemind_gen.request import validate_request
    from samplemind_gen.reuse import generate_or_reuse, was_reused
    from samplemind_gen.service import AudioEngineWithGeneration

    if args.variations < 1 or args.variations > 16:
        raise BadInputError("--variations must be from 1 to 16")
    if args.fmt is not None:
        from samplemind_gen.export import parse_format

        args.fmt = parse_format(args.fmt)
    model = resolve_model(args.model or DEFAULT_MODEL)
    processing = processing_from_args(args, args.fmt)
    if args.duration is None:
        args.duration = loop_duration(args, model.spec.max_duration)
    requests = []
    for prompt in args.prompt:
        for i in range(args.variations):
            seed = args.seed if (args.seed is not None and i == 0) else None
            if args.seed is not None and i > 0:
                seed = (args.seed + i) % (2**32)
            requests.append(request_from_args(args, prompt, seed).resolved())
    long_form = longform_from_args(args, model)
    limit = model.spec.max_duration if long_form is None else MAX_LONG_DURATION
    for request in requests:
        validate_request(request, max_duration=limit)

    output: Path | None = args.output
    folder = output if output is None or not output.suffix else output.parent
    paths.ensure_writable_dir(folder if folder is not None else paths.export_dir())
    if output is not None and output.suffix and len(requests) > 1:
        raise BadInputError("--output names one file, but this makes several takes; give a folder")

    service = AudioEngineWithGeneration(
        LoadOptions(device=args.device, dtype=args.dtype, quantize=args.quantize)
    )
    from samplemind_gen.playback import LivePlayback

    library = open_library()
    reuse = library if args.seed is not None and not getattr(args, "no_reuse", False) else None
    # --play streams the first take while it is generated (MusicGen), the rest play after.
    live = LivePlayback(lambda: service.load(model).sample_rate) if args.play else None
    progress = ProgressLine(extra=live.status if live is not None else None)
    try:
        takes = generate_or_reuse(
            service,
            requests,
            library=reuse,
            model=model,
            processing=processing,
            on_progress=progress if live is None else live.chained(progress),
            long_form=long_form,
            on_audio=live.on_audio if live is not None and long_form is None else None,
        )
    finally:
        progress.done()
    for i, take in enumerate(takes):
        interrupts.raise_if_pressed()  # Ctrl-C while the take was analysed: write nothing
        takes[i] = take = finish_take(
            take,
            output,
            fmt=args.fmt,
            template=args.template,
            processing=processing,
            library=library,
        )
        for note in take.notes:
            print(f"{'note' if was_reused(take) else 'warning'}: {note}", file=sys.stderr)
    if args.json:
        summaries = [t.summary() for t in takes]
        print(json.dumps(summaries[0] if len(summaries) == 1 else {"takes": summaries}))
    else:
        for take in takes:
            f = take.features
            extra = ""
            if f is not None:
                bits = []
                if f.tempo_bpm:
                    bits.append(f"{f.tempo_bpm:.0f} BPM")
                if f.key:
                    bits.append(f"{f.key} {f.mode}")
                if f.lufs is not None:
                    bits.append(f"{f.lufs:.1f} LUFS")
                extra = "  (" + ", ".join(bits) + ")" if bits else ""
            print(f"{take.path}  seed {take.seed}, {take.duration:.2f} s{extra}")
    if live is not None:
        # After the summary, so the paths are on screen (and in --json output) while the takes
        # play out, and a missing audio device costs nothing that was made.
        from samplemind_gen.playback import play_blocking

        sys.stdout.flush()
        streamed = live.finish()
        for i, take in enumerate(takes):
            if not (i == 0 and streamed):
                play_blocking(take.audio, take.sample_rate)
    return 0
