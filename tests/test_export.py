"""Weights out and in: ``python -m mpicnn.export`` to safetensors (loaded into the same
architecture built with torch.nn: same logits within 1e-5, float32) and to ONNX (checked
by onnx.checker, run by ONNX Runtime: same logits within 1e-4) for every built-in model,
the volume and segmentation models (3-D convolutions, pools and BatchNorm, upsampling,
skip concatenation; dense outputs) included;
safetensors written by PyTorch fine-tune through ``--init-from``; bad weights files are
one-line errors naming the file and the problem."""
import json
import struct

import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import models, nn, train
from mpicnn.errors import UserError
from mpicnn.export import main as export_main
from mpicnn.io.checkpoint import load_checkpoint, save_checkpoint
from mpicnn.io.safetensors import read_safetensors, write_safetensors

from tools import TORCH_INSTALL, require_module

EXPORT_INSTALL = "pip install 'mpicnn[export]' safetensors onnxruntime"
# name, builder options, (C, H, W) of the input
BUILT_IN = [("lenet5", {}, (1, 28, 28)), ("convnet", {"width": 4}, (3, 20, 20)),
            ("resnet8", {"width": 4}, (3, 16, 16)), ("resnet20", {"width": 4}, (3, 16, 16)),
            ("vgg11", {"width": 8}, (3, 32, 32)),
            # volumes (C, D, H, W) and segmentation: uneven sides where the model allows them
            ("cosmoflow", {"width": 2}, (2, 16, 18, 17)), ("unet", {"width": 4}, (3, 16, 24)),
            ("unet3d", {"width": 2}, (1, 8, 12, 16))]
assert [b[0] for b in BUILT_IN] == list(models.MODELS)   # every built-in model is covered here
DATASET = {"cosmoflow": "cosmo", "unet": "blobs"}  # the dataset a checkpoint names (image size); else shapes


def trained_like(name, options, shape, seed=0):
    """A float32 model with random weights and BatchNorm statistics (eval uses them)."""
    nn.init.manual_seed(seed)
    model = models.get(name, shape[0], 7, dtype=np.float32, image_size=shape[1:], **options)
    rng = np.random.default_rng(seed)
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            b[...] = rng.normal(0, 0.3, b.shape)
        elif n.endswith("running_var"):
            b[...] = rng.uniform(0.5, 2.0, b.shape)
        elif n.endswith("num_batches_tracked"):
            b[...] = 12
    for n, p in model.named_parameters():
        if n.endswith("bias") and p.data.ndim == 1:
            p.data[...] = rng.normal(0, 0.1, p.data.shape)
    return model.eval()


def save(model, path, name, options, shape):
    """A checkpoint whose dataset gives the image size, or, when no built-in one does
    (sides that differ), that passes it to the export as ``--image-size``; returns the
    export's arguments."""
    even = len(set(shape[1:])) == 1
    dataset = f"{DATASET.get(name, 'shapes')}:{shape[1]}" if even else "elsewhere.h5"
    config = {"model": name, "dataset": dataset, "dtype": "float32", **options}
    save_checkpoint(str(path), {n: p.data for n, p in model.named_parameters()}, dict(model.named_buffers()),
                    step=40, config=config)
    return [str(path)] + ([] if even else ["--image-size", "x".join(map(str, shape[1:]))])


def torch_equivalent(module, torch):
    """The same architecture built with torch.nn (names and shapes as mpicnn's)."""
    tn = torch.nn
    kind = type(module).__name__
    if kind == "Sequential":
        return tn.Sequential(*[torch_equivalent(m, torch) for m in module])
    if kind == "Residual":
        return _TorchResidual(torch, torch_equivalent(module.block, torch),
                              torch_equivalent(getattr(module, "shortcut", None), torch))
    if module is None:
        return None
    if kind == "ConcatSkip":
        return _TorchConcatSkip(torch, torch_equivalent(module.block, torch))
    if kind in ("Conv2d", "Conv3d"):
        return getattr(tn, kind)(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                 module.padding, module.dilation, module.groups, bias=module.bias is not None)
    if kind in ("BatchNorm2d", "BatchNorm3d"):
        return getattr(tn, kind)(module.num_features, eps=module.eps, momentum=module.momentum)
    if kind == "Linear":
        return tn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if kind in ("MaxPool2d", "MaxPool3d"):
        return getattr(tn, kind)(module.kernel_size, module.stride, module.padding)
    if kind == "GlobalAvgPool2d":
        return tn.Sequential(tn.AdaptiveAvgPool2d(1), tn.Flatten())
    if kind == "GlobalAvgPool3d":
        return tn.Sequential(tn.AdaptiveAvgPool3d(1), tn.Flatten())
    if kind == "LeakyReLU":
        return tn.LeakyReLU(module.negative_slope)
    if kind == "Upsample":
        f = module.scale_factor
        return tn.Upsample(scale_factor=f[0] if len(f) == 1 else f, mode="nearest")
    return {"ReLU": tn.ReLU, "Flatten": tn.Flatten}[kind]()


def _TorchConcatSkip(torch, block):
    class ConcatSkip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x):
            return torch.cat([x, self.block(x)], dim=1)
    return ConcatSkip()


def _TorchResidual(torch, block, shortcut):
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block
            if shortcut is not None:
                self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + (self.shortcut(x) if shortcut is not None else x)
    return Residual()


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("name, options, shape", BUILT_IN, ids=[b[0] for b in BUILT_IN])
def test_safetensors_load_into_torch_with_the_same_logits(tmp_path, name, options, shape):
    torch = require_module("torch", TORCH_INSTALL)
    safetensors_torch = require_module("safetensors.torch", EXPORT_INSTALL)
    model = trained_like(name, options, shape)
    ckpt = save(model, tmp_path / "ckpt.h5", name, options, shape)[0]
    out = tmp_path / "model.safetensors"
    assert export_main([ckpt, "-o", str(out)]) == 0
    twin = torch_equivalent(model, torch)
    exported = safetensors_torch.load_file(str(out))
    assert {n: (t.shape, t.dtype) for n, t in exported.items()} == \
        {n: (t.shape, t.dtype) for n, t in twin.state_dict().items()}
    twin.load_state_dict(exported, strict=True)
    twin.eval()
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x)).numpy()
    ours = model.forward(x)
    assert ours.dtype == np.float32 and theirs.shape == ours.shape and ours.shape[:2] == (4, 7)
    assert rel(theirs, ours) < 1e-5


@pytest.mark.parametrize("name, options, shape", BUILT_IN, ids=[b[0] for b in BUILT_IN])
def test_onnx_runs_in_onnxruntime_with_the_same_logits(tmp_path, name, options, shape):
    onnx = require_module("onnx", EXPORT_INSTALL)
    ort = require_module("onnxruntime", EXPORT_INSTALL)
    model = trained_like(name, options, shape)
    args = save(model, tmp_path / "ckpt.h5", name, options, shape)
    out = tmp_path / "model.onnx"
    assert export_main(args + ["-o", str(out)]) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    x = np.random.default_rng(2).standard_normal((3, *shape)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(["logits"], {"input": x})
    ours = model.forward(x)
    assert theirs.dtype == np.float32 and theirs.shape == ours.shape and ours.shape[:2] == (3, 7)
    assert rel(theirs, ours) < 1e-4


def test_opsets_the_installed_onnx_does_not_know_are_refused(tmp_path, capsys):
    """--opset 17 up to the newest the installed onnx knows exports (the newest: the same
    logits from onnx's reference evaluator, which runs every opset it knows); beyond it
    (an opset stamp ONNX Runtime refuses to load) is one line, and nothing is written."""
    onnx = require_module("onnx", EXPORT_INSTALL)
    from onnx.reference import ReferenceEvaluator

    shape = (3, 16, 16)
    model = trained_like("unet", {"width": 4}, shape)       # Resize and Concat too
    args = save(model, tmp_path / "ckpt.h5", "unet", {"width": 4}, shape)
    newest = onnx.defs.onnx_opset_version()
    for opset in (newest + 1, 99):
        assert export_main(args + ["-o", str(tmp_path / "m.onnx"), "--opset", str(opset)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--opset {opset}: the export writes opset 17 to {newest}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.h5"]
    assert export_main(args + ["-o", str(tmp_path / "m.onnx"), "--opset", str(newest)]) == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == newest
    x = np.random.default_rng(2).standard_normal((2, *shape)).astype(np.float32)
    (theirs,) = ReferenceEvaluator(proto).run(["logits"], {"input": x})
    assert rel(theirs, model.forward(x)) < 1e-4


def test_a_folder_as_the_output_is_one_line(tmp_path, capsys):
    ckpt = save(trained_like("lenet5", {}, (1, 28, 28)), tmp_path / "ckpt.h5", "lenet5", {}, (1, 28, 28))[0]
    (tmp_path / "m.onnx").mkdir()
    assert export_main([ckpt, "-o", str(tmp_path / "m.onnx"), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.onnx' is a folder; give the file to write, such as '" in err, err
    assert list((tmp_path / "m.onnx").iterdir()) == []


def test_safetensors_files_agree_with_the_reference_reader_and_writer(tmp_path):
    st = require_module("safetensors.numpy", EXPORT_INSTALL)
    rng = np.random.default_rng(3)
    tensors = {"0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "1.num_batches_tracked":
               np.array(7, np.int64), "2.half": rng.standard_normal(5).astype(np.float16),
               "3.double": rng.standard_normal((2, 0, 3)), "4.mask": rng.random(6) > 0.5}
    ours = write_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "pt"})
    for got in (st.load_file(str(ours)), read_safetensors(ours)[0]):
        assert set(got) == set(tensors)
        for n, a in tensors.items():
            assert got[n].dtype == a.dtype and got[n].shape == a.shape and np.array_equal(got[n], a), n
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    got, metadata = read_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"k": "v"} and all(np.array_equal(got[n], a) for n, a in tensors.items())


def test_torch_weights_fine_tune_through_init_from(tmp_path, capsys):
    """Weights saved by PyTorch (safetensors.torch.save_file of a state_dict) start a run:
    with learning rate 0 the run ends with exactly those parameters."""
    torch = require_module("torch", TORCH_INSTALL)
    safetensors_torch = require_module("safetensors.torch", EXPORT_INSTALL)
    twin = torch_equivalent(models.get("lenet5", 1, 10), torch)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in twin.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "pretrained.safetensors"
    safetensors_torch.save_file(twin.state_dict(), str(path))
    result = train.run(["--model", "lenet5", "--init-from", str(path), "--steps", "1", "--optimizer", "sgd",
                        "--lr", "0", "--batch-size", "16", "--no-progress", "--eval-batch-size", "1000"], MPI.COMM_SELF)
    assert "initialised 10 tensors from" in capsys.readouterr().out
    for name, p in twin.named_parameters():
        np.testing.assert_array_equal(result.params[name], p.detach().numpy(), err_msg=name)
    ckpt = load_checkpoint(str(path))
    assert ckpt.step == 0 and ckpt.optimizer == {"steps": 0, "params": {}} and ckpt.config == {}
    torch.save(twin.state_dict(), str(tmp_path / "pretrained.pt"))
    with pytest.raises(UserError, match=r"pretrained\.pt.*pickled PyTorch file.*safetensors"):
        load_checkpoint(str(tmp_path / "pretrained.pt"))


def _header(path, header, data=b""):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("shape", r"bad\.safetensors: tensor '0\.weight': shape \[2, 3\] of F32 needs 24 bytes, but its data_offsets "
              r"hold 16; the header's shape or dtype is wrong"),
    ("dtype", r"bad\.safetensors: tensor '0\.weight' has dtype 'BF16'.*float32"),
    ("int_param", r"bad\.safetensors: parameter '0\.weight' has dtype int32; parameters must be floating point"),
    ("truncated", r"bad\.safetensors: truncated: the tensors need 16 bytes of data, the file holds 10"),
    ("short", r"bad\.safetensors: not a safetensors file, or truncated"),
    ("pickle", r"bad\.safetensors' is a pickled PyTorch file \(torch\.save\), which mpicnn never loads"),
])
def test_bad_weights_files_name_the_file_and_the_problem(tmp_path, case, message):
    path = tmp_path / "bad.safetensors"
    if case == "shape":
        _header(path, {"0.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "dtype":
        _header(path, {"0.weight": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "int_param":
        _header(path, {"0.weight": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "truncated":
        _header(path, {"0.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(10))
    elif case == "short":
        path.write_bytes(struct.pack("<Q", 500) + b'{"0.weight"')
    else:
        path.write_bytes(b"PK\x03\x04" + bytes(60))     # torch.save's zip archive of pickles
    with pytest.raises(UserError, match=message):
        load_checkpoint(str(path))


def test_bad_inputs_of_the_commands_are_one_line_errors_and_write_nothing(tmp_path):
    import subprocess
    import sys

    bad = _header(tmp_path / "bad.safetensors", {"0.weight": {"dtype": "F32", "shape": [4],
                                                              "data_offsets": [0, 16]}}, bytes(10))
    proc = subprocess.run([sys.executable, "-m", "mpicnn.train", "--init-from", bad, "--steps", "1",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("mpicnn: error: ") and "bad.safetensors: truncated" in proc.stderr
    model = trained_like("convnet", {"width": 4}, (3, 20, 20))
    ckpt = save(model, tmp_path / "ckpt.h5", "convnet", {"width": 4}, (3, 20, 20))[0]
    for argv, problem in (([bad, "-o", "m.onnx"], "truncated"), ([ckpt, "-o", "m.pt"], ".safetensors"),
                          ([ckpt, "-o", "m.onnx", "--model", "resnet8"], "do not fit --model resnet8"),
                          ([ckpt, "-o", "m.onnx", "--image-size", "20y20"], "--image-size"),
                          ([ckpt, "-o", "m.onnx", "--opset", "13"], "opset 17")):
        proc = subprocess.run([sys.executable, "-m", "mpicnn.export", *argv], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 2 and problem in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("mpicnn: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "ckpt.h5"]   # nothing half-written
    (tmp_path / "m.onnx").write_bytes(b"keep")
    assert export_main([ckpt, "-o", str(tmp_path / "m.onnx")]) == 2
    assert (tmp_path / "m.onnx").read_bytes() == b"keep"      # not replaced without --force


def test_layers_without_an_onnx_mapping_are_refused_by_name():
    require_module("onnx", EXPORT_INSTALL)
    from mpicnn.io.onnx import to_onnx

    class Custom(nn.Module):
        def forward(self, x):
            return x
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ConcatSkip(nn.Sequential(nn.ReLU(), Custom())))
    with pytest.raises(UserError, match=r"layer 1\.block\.1 \(Custom\) has no ONNX export"):
        to_onnx(model, (1, 8, 8, 8))
