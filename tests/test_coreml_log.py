"""Our command lines keep coremltools' "Failed to load _MLModelProxy" warnings out of their output."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from ane_vit.coreml_log import quiet_native_library_warnings
from ane_vit.export import export_model

ROOT = Path(__file__).resolve().parents[1]


def test_analysis_run_prints_no_native_library_lines(tmp_path):
    path = export_model(nn.Conv2d(3, 8, 3, padding=1), torch.rand(1, 3, 8, 8), tmp_path / "conv.mlpackage")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "ane_vit.analysis", str(path), "--top", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ML Program: ")
    assert "Failed to load" not in done.stdout + done.stderr


def test_filter_drops_only_the_native_library_records(caplog):
    logger = logging.getLogger("coremltools")
    quiet_native_library_warnings()
    quiet_native_library_warnings()  # idempotent: one filter
    assert sum(type(f).__name__ == "_NativeLibraryFilter" for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="coremltools"):
        logger.warning("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'")
        logger.warning("Torch version 2.13.0 has not been tested with coremltools.")
    assert [r.getMessage() for r in caplog.records] == ["Torch version 2.13.0 has not been tested with coremltools."]
