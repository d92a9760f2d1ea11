"""``python -m mpicnn.predict CKPT INPUT -o OUT.npy``: the predictions of a checkpoint's
model for the images of INPUT, one process.

INPUT is a ``.npy`` array of images (N, C, H, W) or volumes (N, C, D, H, W), an mpicnn
HDF5 dataset or a built-in dataset's name (``--split test`` by default, ``train`` on
request). uint8 images are scaled to [0, 1] as the trainer reads them. OUT holds float32
arrays by the task the model was trained for, which its training dataset's targets say
(as for the trainer; where that dataset is gone, INPUT's if it is a dataset):

- classification: (N, classes) softmax probabilities;
- regression: (N, targets) raw outputs, the predicted targets;
- segmentation: (N, classes, H, W), or (N, classes, D, H, W) for volumes, softmax
  probabilities over the class axis for each pixel (voxel).

OUT is written atomically (temporary file, then rename), never over CKPT or INPUT."""
import sys

import numpy as np

from . import data, models
from .cli import Parser, run_command
from .data.hdf5 import SPLITS, TARGETS
from .errors import UserError
from .io.atomic import atomic_file, same_file
from .io.checkpoint import load_checkpoint


def build_parser():
    p = Parser(prog="python -m mpicnn.predict",
               description="Predictions of a checkpoint's model for .npy or HDF5 images: class "
                           "probabilities (classification), raw outputs (regression) or per-pixel "
                           "class probabilities (segmentation).")
    p.add_argument("checkpoint", help="an mpicnn checkpoint (ckpt-STEP.h5 or a --save file)")
    p.add_argument("input", help="images: a .npy array (N, C, H, W) or (N, C, D, H, W), an mpicnn HDF5 "
                                 "dataset or a built-in dataset's name")
    p.add_argument("-o", "--output", required=True,
                   help="where to write the float32 predictions (.npy; not the checkpoint or input "
                        "file): (N, classes) probabilities, (N, targets) regression outputs or "
                        "(N, classes, [D,] H, W) per-pixel probabilities")
    p.add_argument("--split", choices=("test", "train"), default="test", help="HDF5 split (default test)")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    return p


def read_images(path, split):
    """(N, C, H, W) float images or (N, C, D, H, W) volumes of ``path``, scaled like the
    trainer's reads."""
    if path.endswith(".npy"):
        try:
            images = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path!r} as a NumPy array ({e})")
        if images.ndim not in (4, 5) or images.dtype not in (np.uint8, np.float32, np.float64):
            raise UserError(f"{path!r} holds {images.dtype} of shape {images.shape}; predict takes images "
                            f"(N, C, H, W) or volumes (N, C, D, H, W) as uint8, float32 or float64")
        return images.astype(np.float32) / np.float32(255) if images.dtype == np.uint8 else images
    data.prepare(path)  # a built-in dataset's name works too
    if not data.has_split(path, split):
        raise UserError(f"{path!r} has no {split} split; use --split train or a .npy file")
    dataset = data.open_dataset(path, split)
    try:
        return dataset.read(np.arange(dataset.num_samples))[0]
    finally:
        dataset.close()


def dataset_task(spec):
    """The task that the targets of dataset ``spec`` say (classification, regression or
    segmentation, as the trainer reads them), or None where ``spec`` is no mpicnn dataset."""
    try:
        with data.open_h5(data.prepare(spec)) as f:
            groups = [f[split] for split in SPLITS if split in f]
            return next((TARGETS[kind] for g in groups for kind in TARGETS if kind in g), None)
    except UserError:
        return None


def model_task(ckpt, inputs=None):
    """The task the checkpoint's model was trained for: the one it records; else (a
    checkpoint from before it recorded one, or plain weights) its training dataset's;
    where that is gone, that of ``inputs`` (the dataset predicted on, if any)."""
    recorded = ckpt.attrs.get("task")
    if recorded in TARGETS.values():
        return recorded
    for spec in (ckpt.config.get("dataset"), inputs):
        task = dataset_task(spec)
        if task:
            return task
    raise UserError(f"cannot tell what the model of {ckpt.path!r} predicts (class probabilities or regression "
                    f"targets): its training dataset {ckpt.config.get('dataset')!r} cannot be read; put it "
                    f"back, or give INPUT as an mpicnn dataset (HDF5 file or built-in name) of the same task")


def predict(checkpoint, images, batch_size=500, task=None):
    """The checkpoint's model's predictions for ``images`` (eval mode), float32: softmax
    probabilities (N, classes) for classification, the raw outputs (N, targets) for
    regression, per-pixel softmax probabilities (N, classes, [D,] H, W) for segmentation.
    ``task``: the model's (default: ``model_task`` of the checkpoint)."""
    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    config = ckpt.config
    task = task or model_task(ckpt)
    dtype = np.dtype(config.get("dtype", "float32"))
    options = {"width": config["width"]} if config.get("width") else {}
    try:
        model = models.with_weights(config["model"], images.shape[1], ckpt.params, ckpt.buffers, dtype,
                                    images.shape[2:], **options)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"the images {tuple(images.shape[1:])} do not fit the model of {ckpt.path!r} "
                        f"(--model {config.get('model')}): {e}")
    model.eval()
    out = []
    for lo in range(0, len(images), batch_size):
        outputs = model.forward(np.ascontiguousarray(images[lo:lo + batch_size], dtype=dtype)).astype(np.float64)
        if task != "regression":  # class scores (logits): the trainer's cross-entropy takes their softmax
            e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs = e / e.sum(axis=1, keepdims=True)
        out.append(outputs.astype(np.float32))
    if not out:  # no images: the shape alone (a segmentation model's maps keep the images' size)
        maps = images.shape[2:] if task == "segmentation" else ()
        return np.zeros((0, models.head_of(model)[1].data.shape[0]) + maps, np.float32)
    return np.concatenate(out)


def run(argv=None):
    options = build_parser().parse_args(argv)
    if not options.output.endswith(".npy"):
        raise UserError(f"-o {options.output!r}: write the predictions to a .npy file")
    # the atomic rename would replace the file being read, images or model, without a word
    for what, path in (("the checkpoint", options.checkpoint), ("the input", options.input)):
        if same_file(options.output, path):
            raise UserError(f"-o {options.output!r} is {what} {path!r}; write the predictions to another file")
    ckpt = load_checkpoint(options.checkpoint)
    images = read_images(options.input, options.split)
    task = model_task(ckpt, options.input)
    out = predict(ckpt, images, options.batch_size, task)
    with atomic_file(options.output) as f:
        np.save(f, out, allow_pickle=False)
    what = {"classification": "class probabilities each", "regression": "regression outputs each",
            "segmentation": "class probabilities per pixel"}[task]
    print(f"mpicnn: {len(out)} images -> {options.output} ({out.shape[1]} {what})")


def main(argv=None):
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
