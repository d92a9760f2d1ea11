"""CUDA-awareness detection and its override."""
import pytest

from mpicnn.errors import UserError
from mpicnn.parallel import device_buffers


@pytest.fixture(autouse=True)
def fresh_cache():
    device_buffers.cuda_aware.cache_clear()
    yield
    device_buffers.cuda_aware.cache_clear()


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False)])
def test_override(monkeypatch, value, expected):
    monkeypatch.setenv("MPICNN_CUDA_AWARE", value)
    assert device_buffers.cuda_aware() is expected


def test_detected_without_override(monkeypatch):
    """The MPICH wheel from PyPI is not CUDA-aware: MPIX_Query_cuda_support returns 0."""
    from mpi4py import MPI
    if "pypi.org/p/mpich" not in MPI.Get_library_version():
        pytest.skip("a system MPI: its CUDA support is whatever it was built with")
    monkeypatch.delenv("MPICNN_CUDA_AWARE", raising=False)
    assert device_buffers.cuda_aware() is False


def test_bad_override(monkeypatch):
    monkeypatch.setenv("MPICNN_CUDA_AWARE", "yes")
    with pytest.raises(UserError, match="use 1"):
        device_buffers.cuda_aware()
