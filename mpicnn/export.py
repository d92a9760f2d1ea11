"""``python -m mpicnn.export CKPT -o OUT``: a checkpoint's weights for PyTorch or ONNX.

    python -m mpicnn.export ckpt/ckpt-00000400.h5 -o model.safetensors   # PyTorch names, NCHW
    python -m mpicnn.export final.h5 -o model.onnx                        # the eval-mode graph

``.safetensors``: every parameter and buffer under its PyTorch name and shape, so
``torch_model.load_state_dict(safetensors.torch.load_file("model.safetensors"))`` loads
it into the same architecture built with ``torch.nn``; ``--init-from`` reads it back.
``.onnx``: the model rebuilt from the checkpoint's options (``--model``, ``--width``,
the dataset's image or volume size; flags override them) as an ONNX graph, opset 17
(``--opset``: up to the newest the installed onnx knows), needing the ``onnx`` package
(``pip install 'mpicnn[export]'``). Outputs are written atomically.
Errors are one line ``mpicnn: error: ...`` with exit status 2.
"""
import json
import os
import sys

from . import models
from .cli import Parser, positive, run_command
from .data import builtin
from .data.hdf5 import open_h5
from .errors import UserError
from .io.atomic import atomic_file, refuse_existing
from .io.checkpoint import load_checkpoint
from .io.safetensors import write_safetensors

PROG = "python -m mpicnn.export"
FORMATS = (".safetensors", ".onnx")
MIN_OPSET = 17


def export_safetensors(ckpt, path, overwrite=True):
    """Parameters and buffers of ``ckpt`` by PyTorch name; its run's options as metadata."""
    config = {k: ckpt.config.get(k) for k in ("model", "width", "dataset", "dtype") if ckpt.config.get(k)}
    metadata = {"format": "pt", "mpicnn.config": json.dumps(config, sort_keys=True)}
    return write_safetensors(path, {**ckpt.params, **ckpt.buffers}, metadata, overwrite)


def export_onnx(model, input_shape, path, opset, overwrite=True):
    from .io.onnx import to_onnx    # needs the optional onnx package
    proto = to_onnx(model, input_shape, opset)
    with atomic_file(path, overwrite) as f:
        f.write(proto.SerializeToString())
    return proto


def rebuild_model(ckpt, name=None, width=None, image_size=None):
    """The built-in model ``ckpt`` holds, in eval mode, with its weights; returns
    (model, (C, H, W)) or (model, (C, D, H, W)) for volume models. Channels come from
    the first conv's weight, classes (or regression targets) from the last weight's
    first axis (the head: a Linear, or the 1x1 conv of a U-Net)."""
    config = ckpt.config
    name = name or config.get("model")
    if not name:
        raise UserError(f"{ckpt.path}: does not say which model it holds; pass --model NAME")
    size = image_size or _dataset_image_size(config.get("dataset"))
    if size is None:
        raise UserError(f"{ckpt.path}: the image size of its dataset {config.get('dataset')!r} is unknown "
                        f"here; pass --image-size HxW (DxHxW for volumes)")
    first = ckpt.params.get("0.weight")
    if first is None or first.ndim not in (4, 5):
        raise UserError(f"{ckpt.path}: no first conv weight '0.weight' (N, C, kh, kw) or (N, C, kd, kh, kw); "
                        f"these are not the weights of a built-in model")
    width = width or config.get("width")
    options = {"width": width} if width else {}      # lenet5 has no width
    try:
        model = models.with_weights(name, first.shape[1], ckpt.params, ckpt.buffers, first.dtype, size, **options)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{ckpt.path}: its weights do not fit --model {name} "
                        f"{' '.join(f'--{k} {v}' for k, v in options.items())} at {'x'.join(map(str, size))} "
                        f"({str(e)[:300]})") from None
    return model.eval(), (first.shape[1], *size)


def _dataset_image_size(spec):
    """(H, W) of a dataset spec's images ((D, H, W) of volumes), when they can be known
    here; else None."""
    if not spec:
        return None
    parsed = builtin.parse_spec(spec)
    if parsed[0] == "mnist5k":
        return (28, 28)
    if parsed[0] in ("shapes", "blobs"):
        return (parsed[1], parsed[1])
    if parsed[0] == "cosmo":
        return (parsed[1],) * 3
    if not os.path.isfile(parsed[1]):
        return None
    with open_h5(parsed[1]) as f:
        return tuple(int(d) for d in f["train/images"].shape[2:])


def _check_opset(opset):
    """UserError for an opset the exporter does not write (before 17) or the installed
    onnx does not know: a file stamped with it would pass here but fail where it is run."""
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'mpicnn[export]'") from None
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UserError(f"--opset {opset}: the export writes opset {MIN_OPSET} to {newest} (the newest "
                        f"the installed onnx {onnx.__version__} knows); pick one in that range")


def _image_size(text):
    """(H, W) from "HxW" or "S", (D, H, W) from "DxHxW", or None when it is not that."""
    parts = text.lower().split("x")
    parts = parts * 2 if len(parts) == 1 else parts
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def build_parser():
    p = Parser(prog=PROG, description="Export a checkpoint's weights as safetensors (PyTorch names) or "
                                      "its model as an ONNX graph.")
    p.add_argument("checkpoint", help="an mpicnn checkpoint (ckpt-STEP.h5, --save file) or safetensors weights")
    p.add_argument("-o", "--output", required=True, help="model.safetensors or model.onnx")
    p.add_argument("--model", help="ONNX: the model (default: the checkpoint's --model)")
    p.add_argument("--width", type=positive(int), help="ONNX: the model's width (default: the checkpoint's)")
    p.add_argument("--image-size", metavar="HxW",
                   help="ONNX: input height x width, or DxHxW for volumes (default: the checkpoint's dataset's)")
    p.add_argument("--opset", type=positive(int), default=MIN_OPSET,
                   help=f"ONNX opset, from {MIN_OPSET} to the newest the installed onnx knows "
                        f"(default {MIN_OPSET})")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
    return p


def run(argv=None):
    args = build_parser().parse_args(argv)
    kind = os.path.splitext(args.output)[1].lower()
    if kind not in FORMATS:
        raise UserError(f"output {args.output!r}: name it .safetensors (PyTorch weights) or .onnx (ONNX graph)")
    refuse_existing(args.output, args.force)
    size = None
    if args.image_size is not None:
        size = _image_size(args.image_size)
        if size is None:
            raise UserError(f"--image-size {args.image_size!r}: write HxW, DxHxW or S with whole numbers, "
                            "e.g. 32x32 or 32x32x32")
    if kind == ".onnx":
        _check_opset(args.opset)
    ckpt = load_checkpoint(args.checkpoint)
    if kind == ".safetensors":
        export_safetensors(ckpt, args.output, overwrite=args.force)
        n = len(ckpt.params) + len(ckpt.buffers)
        print(f"wrote {args.output}: {n} tensors by PyTorch name ({os.path.getsize(args.output) / 2**20:.1f} MiB)")
        return
    model, shape = rebuild_model(ckpt, args.model, args.width, size)
    proto = export_onnx(model, shape, args.output, args.opset, overwrite=args.force)
    out = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim[1:]]
    print(f"wrote {args.output}: ONNX opset {args.opset}, input (N, {', '.join(map(str, shape))}), "
          f"output logits (N, {', '.join(map(str, out))})")


def main(argv=None):
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
