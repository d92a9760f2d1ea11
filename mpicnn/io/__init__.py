"""Files a run writes and reads: checkpoints (HDF5; safetensors weights read too),
metrics (JSON lines), and the exports of ``python -m mpicnn.export`` (safetensors,
ONNX), all written atomically (``atomic.py``)."""
