"""Typed helpers that read settings from the environment (12-factor)."""

import os


class SettingError(SystemExit):
    """A bad setting: stops any process at start-up with one line on stderr, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"portmon: bad setting: {message}")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not an integer") from None
    if hi is None and lo is not None and number < lo:
        raise SettingError(f"{name}={value!r} must be at least {lo}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise SettingError(f"{name}={value!r} must be between {lo} and {hi}")
    return number


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]
