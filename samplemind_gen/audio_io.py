"""Reading audio files into float32 (channels, samples) arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samplemind_gen.errors import BadInputError


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path} does not exist; give the path of an audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise BadInputError(f"{path} is not an audio file soundfile can read ({exc})") from exc
    return np.ascontiguousarray(data.T), int(sr)
