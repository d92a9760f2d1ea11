"""What is being trained, as the planner needs it: the model (built with placeholder
parameters, so a model of any size costs nothing), the sample shape and the training
set's size, the global batch, dtype and optimizer. Pure: no MPI, no data read (a
dataset file is opened for its shape only)."""
from dataclasses import dataclass

import numpy as np

from .. import models
from ..errors import UserError
from ..nn import init, skip_input_gradient

OTHER_TASKS = {"cosmo": "regression on 3-D volumes", "blobs": "segmentation of 2-D images"}


@dataclass
class Problem:
    model_name: str
    dataset: str
    batch_size: int
    dtype: str = "float32"
    optimizer: str = "adam"
    bucket_mb: float = 25.0
    width: int = None
    pipeline_schedule: str = "1f1b"
    eval_batch_size: int = 500
    sync_bn: bool = False

    def __post_init__(self):
        self.sample_shape, self.num_classes, self.num_train, self.num_test, self.stored_itemsize = dataset_info(
            self.dataset)
        self.itemsize = np.dtype(self.dtype).itemsize
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size} must be at least 1")
        if self.batch_size > self.num_train:
            raise UserError(f"--batch-size {self.batch_size} is larger than the {self.num_train} training "
                            f"samples of {self.dataset}")
        self.model = build(self.model_name, self.sample_shape, self.num_classes, self.dtype, self.width)

    def label(self):
        return f"{self.model_name} on {self.dataset}, global batch {self.batch_size}, {self.dtype}"


def build(name, sample_shape, num_classes, dtype, width=None):
    """The zoo's model as the trainer builds it (``training.model_state.build_model``):
    placeholders only, and no input gradient for the first layer with parameters."""
    options = {"width": width} if width else {}
    try:
        with init.deferred():
            model = models.get(name, sample_shape[0], num_classes, dtype=np.dtype(dtype),
                               image_size=sample_shape[1:], **options)
    except (ValueError, TypeError) as e:
        raise UserError(f"--model {name}: {e}")
    skip_input_gradient(model)
    return model


def dataset_info(spec):
    """((C, H, W), classes, train samples, test samples, stored bytes per element) of a
    dataset spec without building it."""
    from ..data import builtin, shapes
    parsed = builtin.parse_spec(spec)
    if parsed[0] == "mnist5k":
        return (1, 28, 28), 10, 4000, 1000, 1
    if parsed[0] == "shapes":
        ntrain, ntest = shapes.default_counts(parsed[1], parsed[2])
        return (3, parsed[1], parsed[1]), len(shapes.CLASS_NAMES), ntrain, ntest, 1
    if parsed[0] != "file":  # the built-ins of other tasks: blobs holds images too, but masks, not classes
        raise UserError(f"dataset {spec!r}: the planner models classification of images (mnist5k, shapes:SIZE "
                        f"or an HDF5 file of images); {parsed[0]} ({OTHER_TASKS[parsed[0]]}) is not modelled yet")
    from ..data import Dataset, has_split
    train = Dataset(parsed[1], "train", check_finite=False, cache_mb=0)
    ntest = Dataset(parsed[1], "test", check_finite=False, cache_mb=0).num_samples if has_split(spec, "test") else 0
    if len(train.shape) != 3:
        raise UserError(f"dataset {spec!r} holds samples of shape {train.shape}; the planner handles (C, H, W) images")
    if train.task != "classification":
        raise UserError(f"dataset {spec!r}: the planner models classification of images; a {train.task} dataset "
                        f"is not modelled yet")
    return tuple(train.shape), train.num_classes, train.num_samples, ntest, np.dtype(train.dtype).itemsize
