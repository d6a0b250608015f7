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


def pytest_addoption(parser):
    parser.addoption("--run-fp16-full", action="store_true", default=False, help=_FP16_FULL_HELP)


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


def _fp16_full_requested(config) -> bool:
    return config.getoption("--run-fp16-full") or "fp16_full" in (config.getoption("markexpr", "") or "")


def pytest_report_header(config):
    if not _fp16_full_requested(config):
        return "fp16_full tests (true float16 sweep) are deselected; --run-fp16-full runs them"
    return None


def pytest_collection_modifyitems(config, items):
    if sys.platform != "darwin":
        skip = pytest.mark.skip(reason="needs macOS and the Core ML runtime (Core ML prediction does not run on Linux)")
        for item in items:
            if "macos" in item.keywords:
                item.add_marker(skip)
    if not _fp16_full_requested(config):
        dropped = [i for i in items if "fp16_full" in i.keywords and not _named_on_command_line(config, i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if i not in dropped]
