"""Where samplemind-gen keeps its config, data (library database) and default exports.

`SAMPLEMIND_GEN_HOME` relocates all three, as `HF_HOME` does for the model cache, so tests and
portable installs stay self-contained.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "samplemind-gen"
HOME_ENV = "SAMPLEMIND_GEN_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "config"
    from platformdirs import user_config_path

    return user_config_path(APP_NAME)


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "data"
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


def export_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "exports"
    from platformdirs import user_music_path

    return user_music_path() / APP_NAME


KERNEL_CACHE_ENV = "SAMPLEMIND_GEN_KERNEL_CACHE"


def kernel_cache_dir() -> Path:
    """Where the CPU kernels compiled for this machine are kept (`native_kernels`):
    `SAMPLEMIND_GEN_KERNEL_CACHE`, else the cache folder of `SAMPLEMIND_GEN_HOME` or the user's."""
    value = os.environ.get(KERNEL_CACHE_ENV)
    if value:
        return Path(value).expanduser()
    home = _home()
    if home is not None:
        return home / "cache" / "kernels"
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME) / "kernels"


def settings_file() -> Path:
    return config_dir() / "settings.toml"


def library_db() -> Path:
    return data_dir() / "library.sqlite3"


def ensure_writable_dir(folder: Path) -> Path:
    """Create `folder` if needed and prove it is writable, before any long job starts."""
    import tempfile

    from samplemind_gen.errors import OutputNotWritableError

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".samplemind-probe-"):
            pass
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write to {folder} ({exc.strerror or exc}); choose another folder with "
            "--output or fix its permissions"
        ) from exc
    return folder
