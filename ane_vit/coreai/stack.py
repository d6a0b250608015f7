"""Is Apple's Core AI stack installed here, and if not, why not and where does it install?

``coreai-core`` (the ``coreai`` package: the runtime and the authoring API), ``coreai-torch``
(the converter) and ``coreai-opt`` (casting and compression) ship wheels for two platforms
only: CPython >= 3.11 on Linux x86-64 with glibc >= 2.34 (manylinux_2_34), and macOS 26+
on Apple silicon. ``requirements.txt`` installs them there through environment markers and
skips them elsewhere, so ``import ane_vit`` works everywhere and every function of
``ane_vit.coreai`` that needs the stack calls ``require_coreai`` first: it raises
``CoreAIUnavailableError`` (an ``ImportError``) naming this platform and where the stack
installs. Tests and notebook cells skip with that message.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import warnings
from functools import lru_cache

from .._versions import dist_version

__all__ = ["COREAI_PINS", "WHERE_COREAI_INSTALLS", "CoreAIUnavailableError", "coreai_status", "require_coreai",
           "coreai_versions"]

#: The versions requirements.txt pins (the ones this package is tested with).
COREAI_PINS: dict[str, str] = {"coreai-core": "1.0.0b3", "coreai-torch": "0.4.3", "coreai-opt": "0.4.0"}
#: Where the wheels of the pinned versions exist.
WHERE_COREAI_INSTALLS = (
    "CPython >= 3.11 on Linux x86-64 with glibc >= 2.34 (manylinux_2_34 wheels), "
    "or macOS 26+ on Apple silicon"
)


class CoreAIUnavailableError(ImportError):
    """Apple's Core AI stack (coreai-core, coreai-torch, coreai-opt) cannot be imported here."""


def _platform_line() -> str:
    libc, version = platform.libc_ver()
    libc_text = f", {libc} {version}" if libc else ""
    return (f"{platform.system() or sys.platform} {platform.machine()}{libc_text}, "
            f"Python {platform.python_version()}")


def _platform_has_wheels() -> bool:
    """True where the pinned wheels exist (the environment markers of requirements.txt)."""
    if sys.version_info < (3, 11):
        return False
    machine = platform.machine().lower()
    if sys.platform == "linux" and machine in ("x86_64", "amd64"):
        libc, version = platform.libc_ver()
        try:
            return libc != "glibc" or tuple(int(p) for p in version.split(".")[:2]) >= (2, 34)
        except ValueError:
            return True
    if sys.platform == "darwin" and machine == "arm64":
        try:
            return int(platform.mac_ver()[0].split(".")[0]) >= 26
        except ValueError:
            return False
    return False


@lru_cache(maxsize=1)
def _import_error() -> str | None:
    """None when the three packages import, else the first import error as text (cached)."""
    with warnings.catch_warnings():
        # coreai-torch 0.4.3 warns on torch "2.13.0+cpu" ("validated with torch<=2.13.0"):
        # the local-version tag makes 2.13.0+cpu compare above 2.13.0. Harmless.
        warnings.filterwarnings("ignore", message="coreai-torch has only been validated", category=UserWarning)
        for module in ("coreai.runtime", "coreai.authoring", "coreai_torch"):
            try:
                __import__(module)
            except Exception as err:  # ImportError, or an OSError from a native library
                return f"import {module} failed ({type(err).__name__}: {err})"
    # coreai-opt (float16 casting) pulls in torchao, slow and chatty to import: only look for it.
    if importlib.util.find_spec("coreai_opt") is None:
        return "import coreai_opt failed (ModuleNotFoundError: No module named 'coreai_opt')"
    return None


def coreai_status() -> tuple[bool, str]:
    """``(True, versions)`` when the Core AI stack imports here, else ``(False, why and where it installs)``."""
    error = _import_error()
    if error is None:
        return True, ", ".join(f"{k} {v}" for k, v in coreai_versions().items())
    if _platform_has_wheels():
        hint = ("this platform has wheels: install them with `pip install -r requirements.txt` "
                "(or `pip install 'ane-vit[coreai]'`)")
    else:
        hint = f"no wheels exist for this platform ({_platform_line()}); they exist for {WHERE_COREAI_INSTALLS}"
    pins = ", ".join(f"{k}=={v}" for k, v in COREAI_PINS.items())
    return False, f"Apple's Core AI stack ({pins}) is not usable here: {error}; {hint}"


def require_coreai(what: str = "this function") -> None:
    """Raise ``CoreAIUnavailableError`` (saying why, and where Core AI installs) unless the stack imports."""
    ok, message = coreai_status()
    if not ok:
        raise CoreAIUnavailableError(f"{what} needs Core AI. {message}")


def coreai_versions() -> dict[str, str]:
    """Installed versions of the three Core AI packages (``"not installed"`` where missing)."""
    return {name: dist_version(name) for name in COREAI_PINS}
