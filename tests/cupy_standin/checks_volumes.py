"""Volume and segmentation models with ``--backend cupy`` on the CuPy stand-in: a CosmoFlow
and a U-Net run equal the NumPy runs (float64), take no implicit device->host copy, and
launch the kernels of the volume ops (conv3d.cu, pool3d.cu, concat.cu, dense_loss.cu).

Run by tests/test_cupy_standin.py as
``PYTHONPATH=tests/cupy_standin:. python -m pytest tests/cupy_standin/checks_volumes.py``.
"""
import os
import sys

import pytest
from mpi4py import MPI

import cupy
import kernels
from cupy import standin

from mpicnn import train

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from contract import max_rel_diff  # noqa: E402

assert getattr(cupy, "IS_STANDIN", False), "these checks need tests/cupy_standin first on PYTHONPATH"

COMMON = ["--steps", "2", "--batch-size", "2", "--no-progress", "--eval-batch-size", "1000", "--dtype", "float64",
          "--optimizer", "sgd", "--momentum", "0.9"]
MODELS = {  # model -> (arguments, kernels its step must launch)
    "cosmoflow": (["--model", "cosmoflow", "--width", "2", "--dataset", "cosmo:16:8"],
                  {"im2col3d", "col2im3d", "max_pool3d_forward", "max_pool3d_backward", "mse_forward",
                   "mse_backward"}),
    "unet": (["--model", "unet", "--width", "2", "--dataset", "blobs:32:8"],
             {"upsample_nearest_forward", "upsample_nearest_backward", "concat_channels", "split_channels",
              "dense_xent_forward", "dense_xent_backward"}),
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_volume_models_on_the_cupy_path_equal_numpy(model, monkeypatch):
    argv, launched = MODELS[model]
    monkeypatch.setenv("MPICNN_TRACE_KERNELS", "1")
    kernels.reset_trace()
    mark = standin.mark()
    got = train.run(argv + COMMON + ["--backend", "cupy"], MPI.COMM_SELF).params
    events = standin.since(mark)
    names = {row[0].split("<")[0] for row in kernels.trace_table()}
    ref = train.run(argv + COMMON + ["--backend", "numpy"], MPI.COMM_SELF).params
    assert launched <= names, f"kernels not launched: {sorted(launched - names)}"
    assert standin.count("implicit", events) == 0
    assert max_rel_diff(got, ref) < 1e-9
