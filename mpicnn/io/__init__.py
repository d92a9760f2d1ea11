"""Files a run writes: checkpoints (HDF5) and metrics (JSON lines)."""
