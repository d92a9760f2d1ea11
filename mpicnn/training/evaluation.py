"""Evaluation of a grid rank's model on its share of a dataset split (the test set, or
the set ``python -m mpicnn.evaluate`` names), by task: accuracy and mean loss for
classification; MSE, the MSE of predicting the training mean and the relative error per
target for regression; pixel accuracy, mean IoU and the mean per-pixel loss for
segmentation (``layout.eval_extras`` holds the latter two's extra figures). The split is
cut over the data ranks, and a dense task's maps over the spatial ranks; the figures
are summed over them, never gathered."""
import numpy as np

from .. import backend
from ..parallel.collectives import sum_in_place


def evaluate(layout, dataset):
    """(accuracy or None, loss) of ``layout``'s model on ``dataset``, the same on every rank."""
    layout.sync_buffers()
    layout.model.eval()
    lo, hi = layout.batches.eval_range(dataset)
    if layout.task == "regression":
        result = _regression(layout, dataset, lo, hi)
    elif layout.dense:
        result = _segmentation(layout, dataset, lo, hi)
    else:
        result = _classification(layout, dataset, lo, hi)
    layout.model.train()
    return result


def _classification(layout, dataset, lo, hi):
    size, totals = layout.args.eval_batch_size, np.zeros(2)
    for s in range(lo, hi, size):
        idx = np.arange(s, min(s + size, hi))
        x, y = layout.batches.read(dataset, idx)
        loss = layout.criterion(layout.model.forward(backend.asarray(x)), y)
        totals += (loss * len(idx), layout.criterion.correct)  # counted by the loss, on the device
    sum_in_place(layout.grid.data, totals)
    n = dataset.num_samples
    return totals[1] / n, totals[0] / n


def _outputs(layout, dataset, lo, hi):
    size = layout.args.eval_batch_size
    for s in range(lo, hi, size):
        x, y = layout.batches.read(dataset, np.arange(s, min(s + size, hi)))
        yield backend.to_host(layout.model.forward(backend.asarray(x))), y


def _regression(layout, dataset, lo, hi):
    """MSE, the MSE of predicting the training mean, and per target the relative
    error sum|pred - t| / sum|t|. Every spatial block holds the same predictions."""
    K = layout.train_set.num_classes
    sums = np.zeros(2 + 2 * K)  # squared errors (model, baseline), abs errors, abs targets
    for pred, t in _outputs(layout, dataset, lo, hi):
        sums[0] += np.sum((pred.astype(np.float64) - t) ** 2)
        sums[1] += np.sum((layout.target_mean - t) ** 2)
        sums[2:2 + K] += np.abs(pred - t).sum(axis=0)
        sums[2 + K:] += np.abs(t).sum(axis=0)
    sum_in_place(layout.grid.data, sums)
    count = dataset.num_samples * K
    mse, baseline = sums[0] / count, sums[1] / count
    layout.eval_extras = {"test_mse": mse, "baseline_mse": baseline,
                          "relative_error": (sums[2:2 + K] / np.maximum(sums[2 + K:], 1e-300)).tolist()}
    return None, mse


def _segmentation(layout, dataset, lo, hi):
    """Pixel accuracy, mean IoU over the classes present (in targets or predictions) and
    the mean per-pixel loss, from a confusion matrix summed over the data and spatial
    ranks (each holds its block of every map)."""
    K = layout.train_set.num_classes
    confusion = np.zeros(K * K + 1)  # (target, predicted) counts, then the loss sum
    for logits, masks in _outputs(layout, dataset, lo, hi):
        pred = logits.argmax(axis=1)
        confusion[:-1] += np.bincount((masks * K + pred).ravel(), minlength=K * K)
        confusion[-1] += layout.criterion(logits, masks, total=1)  # the sum over the block
    sum_in_place(layout.grid.replicas, confusion)
    cm = confusion[:-1].reshape(K, K)
    pixels = cm.sum()
    inter = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    accuracy = inter.sum() / pixels
    layout.eval_extras = {"test_pixel_accuracy": accuracy,
                          "test_mean_iou": float(np.mean(inter[union > 0] / union[union > 0]))}
    return accuracy, confusion[-1] / pixels
