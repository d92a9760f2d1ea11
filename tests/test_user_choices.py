"""What a user picks that the zoo does not ship or the run did not start with: their own
model by name, options a model does not take, another optimizer on resume."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import mpicnn
from contract import agreed_max, max_rel_diff, on_ranks
from mpicnn import data, models, nn, train
from mpicnn.config import parse_args as config_args
from mpicnn.errors import UserError

USER = "user_models.small:build"
BASE = ["--model", USER, "--dataset", "shapes:16:64", "--dtype", "float64", "--steps", "3", "--batch-size", "8",
        "--no-progress", "--seed", "5"]


def test_user_model_by_name():
    model = models.get(USER, 3, 4, image_size=(16, 16), width=4)
    assert model.named_parameters().__next__()[1].data.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match="does not take --depth; the options it takes: --width"):
        models.get(USER, 3, 4, depth=3)
    with pytest.raises(ValueError, match="returned 'list', not an mpicnn.nn.Module"):
        models.get("user_models.small:not_a_model", 3, 4)
    with pytest.raises(ValueError, match="has no function 'nope'"):
        models.get("user_models.small:nope", 3, 4)
    with pytest.raises(ValueError, match="put the folder that holds it on PYTHONPATH"):
        models.get("no_such_package.mod:build", 3, 4)
    with pytest.raises(ValueError, match="^importing 'user_models.broken' failed: NameError: name 'np'"):
        models.get("user_models.broken:build", 3, 4)


@pytest.mark.parametrize("builder, says", [
    ("user_models.small:three_outputs", "its head '3.weight' has 3 outputs and the dataset 6 classes"),
    ("user_models.small:always_float64", "its parameter '0.weight' is float64, the run's --dtype is float32"),
    ("user_models.broken:build", "importing 'user_models.broken' failed: NameError"),
])
def test_a_user_model_that_cannot_train_on_the_run_is_refused_at_start(builder, says):
    """Found when the model is built, in one line, not as a loss or dtype error in the
    first step (or an import traceback)."""
    argv = ["--model", builder, "--dataset", "shapes:16:64", "--steps", "3", "--batch-size", "8", "--no-progress"]
    with pytest.raises(UserError, match="^--model " + builder) as e:
        train.run(argv, None)
    assert says in str(e.value)


def test_a_model_that_flattens_its_input_first_trains_like_torch():
    """The first layer with parameters computes no input gradient only when it is the
    very first layer: behind a Flatten it must hand one on (the trainer set it off and
    Flatten's backward failed on None). Checked against the same MLP in PyTorch."""
    torch = pytest.importorskip("torch")
    argv = BASE[:1] + ["user_models.small:linear_only"] + BASE[2:] + ["--optimizer", "sgd", "--lr", "0.1",
                                                                   "--momentum", "0", "--schedule", "constant"]
    result = train.run(argv, None)
    with data.open_dataset("shapes:16:64") as ds:
        c, classes, n = ds.shape[0], ds.num_classes, ds.num_samples
        model = models.get("user_models.small:linear_only", c, classes, dtype=np.float64, image_size=(16, 16))
        assert nn.skip_input_gradient(model) is None  # its first layer is the Flatten
        nn.init.manual_seed(5)
        model = models.get("user_models.small:linear_only", c, classes, dtype=np.float64, image_size=(16, 16))
        ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * 256, 16), torch.nn.ReLU(),
                                  torch.nn.Linear(16, classes)).double()
        with torch.no_grad():
            for (_, p), t in zip(model.named_parameters(), ref.parameters()):
                t.copy_(torch.from_numpy(p.data))
        opt = torch.optim.SGD(ref.parameters(), lr=0.1)
        order = data.epoch_order(n, 5, 0)
        for step in range(3):
            x, y = ds.read(data.batch_indices(order, step, 8), dtype=np.float64)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            opt.step()
    for (name, p), t in zip(result.params.items(), ref.parameters()):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_option_a_model_does_not_take_is_one_clean_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mpicnn.train", "--model", "lenet5", "--width", "32",
                           "--steps", "1", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mpicnn: error: --model lenet5: lenet5 does not take --width; the options it takes: none"]


def test_resume_with_another_optimizer_is_refused(tmp_path):
    argv = ["--model", "lenet5", "--steps", "2", "--batch-size", "8", "--no-progress", "--optimizer", "adam",
            "--checkpoint-dir", str(tmp_path)]
    train.run(argv, None)
    for other in ("sgd", "adamw"):
        with pytest.raises(UserError, match="written with --optimizer adam; resume with --optimizer adam"):
            train.run(argv[:-4] + ["--optimizer", other, "--checkpoint-dir", str(tmp_path), "--resume",
                                   "--steps", "4"], None)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel", [["data=2", "--sync-bn"], ["spatial=2x1"], ["channel=2"],
                                      ["pipeline=2", "--micro-batches", "2"]])
def test_user_model_on_every_layout_equals_one_rank(parallel):
    extra = parallel[1:]
    from mpi4py import MPI
    serial = train.run(BASE + extra, MPI.COMM_SELF).params

    def differs(comm):
        return max_rel_diff(train.run(BASE + extra + ["--parallel", parallel[0]], comm).params, serial)
    assert agreed_max(on_ranks(2, differs)) <= 1e-9


CENTERED = ["--model", "user_models.small:centered", "--dataset", "shapes:16:64", "--dtype", "float64", "--steps",
            "3", "--batch-size", "8", "--no-progress", "--seed", "2"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel, ranks", [("spatial=2x1", 2), ("spatial=2x2", 4), ("channel=2", 2)])
def test_declared_spatial_reduction_equals_one_rank(parallel, ranks):
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_size() < ranks:
        pytest.skip(f"needs {ranks} ranks")
    serial = train.run(CENTERED, MPI.COMM_SELF).params

    def differs(comm):
        return max_rel_diff(train.run(CENTERED + ["--parallel", parallel], comm).params, serial)
    assert agreed_max(on_ranks(ranks, differs)) <= 1e-9


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("parallel", ["spatial=2x1", "channel=2"])
def test_undeclared_layer_is_refused_under_splits(parallel):
    argv = [a.replace(":centered", ":centered_undeclared") for a in CENTERED] + ["--parallel", parallel]

    def refused(comm):
        try:
            train.run(argv, comm)
        except UserError as e:
            return float("layer 2 (CenterUndeclared) does not say how it touches them" not in str(e))
        return 1.0
    assert agreed_max(on_ranks(2, refused)) == 0


def test_a_new_run_does_not_mix_with_another_runs_checkpoints(tmp_path):
    argv = ["--model", "lenet5", "--steps", "2", "--batch-size", "8", "--no-progress", "--checkpoint-dir",
            str(tmp_path), "--checkpoint-every", "1"]
    train.run(argv, None)
    before = sorted(os.listdir(tmp_path))
    assert before == ["ckpt-00000001.h5", "ckpt-00000002.h5"]
    with pytest.raises(UserError, match="holds another run's checkpoints .* pass --overwrite"):
        train.run(argv + ["--seed", "1"], None)
    assert sorted(os.listdir(tmp_path)) == before  # nothing touched
    train.run(argv + ["--resume", "--steps", "3"], None)  # the same run continues
    assert sorted(os.listdir(tmp_path))[-1] == "ckpt-00000003.h5"
    train.run(argv + ["--seed", "1", "--overwrite"], None)
    assert sorted(os.listdir(tmp_path)) == before  # the old run's files are gone, the new run's are there


def test_toml_resume_true_means_the_latest(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'resume = true\ncheckpoint-dir = "{tmp_path}"\n')
    assert config_args(["--config", str(config)]).resume == "latest"
    config.write_text("resume = false\n")
    assert config_args(["--config", str(config)]).resume is None


def test_version_and_defaults_in_help():
    version = subprocess.run([sys.executable, "-m", "mpicnn.train", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"mpicnn {mpicnn.__version__}"
    text = subprocess.run([sys.executable, "-m", "mpicnn.train", "--help"], capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    for shown in ("--epochs EPOCHS (default 30)", "(default 64)", "--keep-checkpoints KEEP_CHECKPOINTS how many "
                  "checkpoints to keep (default 3)", "(default float32)"):
        assert shown in flat, shown


def test_channels_last_hdf5_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "nhwc.h5"
    with h5py.File(path, "w") as f:
        f["train/images"] = np.zeros((8, 32, 32, 3), np.uint8)
        f["train/labels"] = np.arange(8) % 2
    with pytest.raises(UserError, match=r"looks channels-last \(N, H, W, C\).*--layout nhwc"):
        data.open_dataset(str(path))


def test_windows_of_ones_own_match_the_builtin_layers():
    """window_input/window_input_grad on one rank: padding, stride and dilation as the
    built-in pools and convs have them, forward and backward."""
    from user_models import small
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 7))
    depthwise = small.DilatedDepthwise(3)
    conv = nn.Conv2d(3, 3, 3, padding=2, dilation=2, groups=3, bias=False, dtype=np.float64)
    conv.weight.data[...] = depthwise.weight.data[:, None]
    pairs = [(small.BoxBlur(), nn.AvgPool2d(3, 1, 1), x), (small.StridedMax(), nn.MaxPool2d(3, 2, 1), x),
             (depthwise, conv, x), (small.BoxBlur(), nn.AvgPool3d(3, 1, 1), rng.standard_normal((2, 2, 5, 6, 7)))]
    for mine, builtin, inputs in pairs:
        y = mine(inputs)
        assert np.abs(y - builtin(inputs)).max() <= 1e-12, mine
        dy = rng.standard_normal(y.shape)
        assert np.abs(mine.backward(dy) - builtin.backward(dy)).max() <= 1e-12, mine
    assert np.abs(depthwise.weight.grad - conv.weight.grad[:, 0]).max() <= 1e-12
    with pytest.raises(ValueError, match=r"Window stride=0: an int >= 1"):
        nn.Window(kernel=3, stride=0)
    with pytest.raises(ValueError, match="gives 2 kernel values for an input with 3 spatial axes"):
        nn.Window(kernel=(3, 3)).geometry(3)


WINDOWS = ["--model", "user_models.small:windows", "--dataset", "shapes:16:64", "--dtype", "float64", "--steps",
           "3", "--batch-size", "8", "--no-progress", "--seed", "3"]
VOLUMES = ["--model", "user_models.small:blurred_volumes", "--dataset", "cosmo:16:16", "--dtype", "float64",
           "--steps", "2", "--batch-size", "4", "--no-progress", "--seed", "3"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("argv, parallel, ranks", [(WINDOWS, "spatial=2x1", 2), (WINDOWS, "spatial=2x2", 4),
                                                   (WINDOWS, "data=2,spatial=1x2", 4),
                                                   (VOLUMES, "spatial=2x1x1", 2), (VOLUMES, "spatial=1x2x2", 4)])
def test_declared_windows_equal_one_rank(argv, parallel, ranks):
    """Blur, dilated depthwise filter and strided max of one's own, in plain NumPy on each
    rank's block: the halo exchange makes the split run the 1-rank run."""
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_size() < ranks:
        pytest.skip(f"needs {ranks} ranks")
    serial = train.run(argv, MPI.COMM_SELF).params

    def differs(comm):
        return max_rel_diff(train.run(argv + ["--parallel", parallel], comm).params, serial)
    assert agreed_max(on_ranks(ranks, differs)) <= 1e-9


@pytest.mark.mpi(min_size=2)
def test_undeclared_window_is_refused_under_spatial_splits():
    argv = [a.replace(":windows", ":windows_undeclared") for a in WINDOWS] + ["--parallel", "spatial=2x1"]

    def refused(comm):
        try:
            train.run(argv, comm)
        except UserError as e:
            return float("layer 2 (BoxBlurUndeclared) does not say how it touches them; declare it in the class: "
                         "touches = 'pointwise'" not in str(e) or "nn.Window(kernel, stride, padding, dilation)"
                         not in str(e))
        return 1.0
    assert agreed_max(on_ranks(2, refused)) == 0
