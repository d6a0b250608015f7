"""One ``to_json`` for the package's reports (program analysis, rule checks, Core AI summaries)."""

from __future__ import annotations

import json
import os
from typing import Any


class JSONReport:
    """Mixin: a report with ``to_dict()`` (plain JSON-safe Python) gets ``to_json``."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every report defines it
        raise NotImplementedError

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 1) -> str:
        """The report as JSON text; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text
