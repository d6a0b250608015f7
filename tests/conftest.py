import os
import sys

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (-n 2, the default options) each worker, and each notebook kernel it
    # starts, gets one thread: two workers on a 2-core machine, not four competing threads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

_FP16_FULL_HELP = (
    "also run the true-float16 sweep of every MOAT at 256x256 (marker fp16_full): minutes on CPUs "
    "with native float16, over 30 minutes on CPUs without it"
)


_EXPORT_SWEEP_HELP = (
    "also export every registry architecture, attention mode, local layout, PEType and split_head "
    "setting with torch.export at 256x256 (marker export_sweep): about 3 minutes in two workers"
)

# Opt-in markers: deselected unless their option is given, "-m <marker>" asks for them, or a
# test is named on the command line.
_OPT_IN = {"fp16_full": "--run-fp16-full", "export_sweep": "--run-export-sweep"}


def pytest_addoption(parser):
    parser.addoption("--run-fp16-full", action="store_true", default=False, help=_FP16_FULL_HELP)
    parser.addoption("--run-export-sweep", action="store_true", default=False, help=_EXPORT_SWEEP_HELP)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _named_on_command_line(config, item) -> bool:
    """True if ``item`` (or its test function) was given by node id, e.g. ``tests/x.py::test_y``."""
    for arg in config.args:
        path, sep, rest = arg.partition("::")
        if not sep:
            continue
        full = os.path.join(str(config.invocation_params.dir), path)
        wanted = os.path.relpath(full, str(config.rootpath)).replace(os.sep, "/") + "::" + rest
        if item.nodeid == wanted or item.nodeid.startswith(wanted + "["):
            return True
    return False


def _requested(config, marker: str) -> bool:
    return config.getoption(_OPT_IN[marker]) or marker in (config.getoption("markexpr", "") or "")


def pytest_report_header(config):
    lines = []
    if not _requested(config, "fp16_full"):
        lines.append("fp16_full tests (true float16 sweep) are deselected; --run-fp16-full runs them")
    if not _requested(config, "export_sweep"):
        lines.append("export_sweep tests (torch.export of every configuration) are deselected; --run-export-sweep runs them")
    return lines or None


def pytest_collection_modifyitems(config, items):
    if sys.platform != "darwin":
        skip = pytest.mark.skip(reason="needs macOS and the Core ML runtime (Core ML prediction does not run on Linux)")
        for item in items:
            if "macos" in item.keywords:
                item.add_marker(skip)
    for marker in _OPT_IN:
        if _requested(config, marker):
            continue
        dropped = [i for i in items if marker in i.keywords and not _named_on_command_line(config, i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if i not in dropped]
