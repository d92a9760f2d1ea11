"""Tests that need a tool this machine may lack (PyTorch, NVRTC, shellcheck, Slurm): skip
here when it is missing, but fail under ``CI=true``, where ``.ci/run`` installs every tool,
so that a broken install cannot turn a whole group of checks into silent skips."""
import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
TORCH_INSTALL = "install the CPU build: see the README's Tests section"


def require(condition, why):
    """Go on when ``condition`` holds; otherwise skip the test saying ``why`` (fail under CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true, so this may not skip: {why}", pytrace=False)
    pytest.skip(why)


def require_module(name, install):
    """The imported module ``name``; ``require`` it, with ``install`` saying how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require(False, f"cannot import {name} ({e}); {install}")
