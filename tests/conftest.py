import os
import sys

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if sys.platform != "darwin":
        skip = pytest.mark.skip(reason="needs macOS and the Core ML runtime (Core ML prediction does not run on Linux)")
        for item in items:
            if "macos" in item.keywords:
                item.add_marker(skip)
