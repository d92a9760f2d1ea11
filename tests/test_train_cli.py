"""The trainer end to end: as users run it (mpiexec subprocesses) and in-process."""
import json
import os

import numpy as np
import pytest
from mpi4py import MPI

from contract import params_of
from launch import mpi_env, run_mpi
from mpicnn import train
from mpicnn.errors import UserError
from mpicnn.io.checkpoint import load_checkpoint

QUICK = ["--no-progress", "--batch-size", "32", "--eval-batch-size", "1000"]


def test_two_ranks_train_report_and_checkpoint(tmp_path):
    metrics, ckpts = tmp_path / "m.jsonl", tmp_path / "ckpt"
    proc = run_mpi(2, "-m", "mpicnn.train", *QUICK, "--steps", "40", "--lr", "0.005", "--log-every", "10",
                   "--metrics", str(metrics), "--checkpoint-dir", str(ckpts), "--checkpoint-every", "20",
                   "--save", str(tmp_path / "final.h5"))
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "images/s" in proc.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [10, 20, 30, 40]
    assert all({"epoch", "loss", "lr", "images_per_sec"} <= set(r) for r in steps)
    assert records[-1]["final"] and 0.5 < records[-1]["test_accuracy"] <= 1  # 40 steps: far above chance
    assert records[-1]["images_per_sec"] > 0
    assert sorted(os.listdir(ckpts)) == ["ckpt-00000020.h5", "ckpt-00000040.h5"]
    final = load_checkpoint(str(tmp_path / "final.h5"))
    assert final.step == 40 and final.config["model"] == "lenet5"
    assert json.loads(final.attrs["rng_state"])["step"] == 40 and final.attrs["seed"] == 0


@pytest.mark.parametrize("args, words", [
    (["--parallel", "data=3"], ["3 ranks", "-n 3"]),
    (["--model", "nope"], ["unknown model", "'nope'"]),
    (["--dataset", "/nonexistent/x.h5"], ["/nonexistent/x.h5"]),
    (["--lr", "-1"], ["--lr", "-1"]),
    (["--lr", "fast"], ["--lr", "expected a number, got 'fast'"]),
    (["--stage-dir", ""], ["--stage-dir is empty", "unset shell variable"]),
    (["--save", ""], ["--save is empty"]),
    (["--batch-size", "6.5"], ["--batch-size", "expected a whole number, got '6.5'"]),
    (["--resume"], ["--checkpoint-dir"]),
    (["--batch-size", "1"], ["smaller than the 2 data-parallel ranks"]),
    (["--model", "lenet5", "--dataset", "shapes:32"], ["28x28", "convnet"]),
    (["--resume", "/nonexistent/ckpt.h5"], ["not found"]),
    (["--staleness", "2"], ["--parallel ps=K"]),
    (["--micro-batches", "40"], ["2 data-parallel ranks times 40 micro-batches", "at least 80"]),
])
def test_bad_input_one_line_exit_2_on_every_rank(args, words):
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--steps", "1", *args, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for w in words:
        assert w in lines[0]


def test_config_file_and_command_line_precedence(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('steps = 3\nbatch-size = 16\nno_progress = true\nlr = 0.002\n')
    args = train.parse_args(["--config", str(cfg), "--steps", "4"])
    assert (args.steps, args.batch_size, args.no_progress, args.lr) == (4, 16, True, 0.002)
    cfg.write_text("stepz = 3\n")
    with pytest.raises(UserError, match="unknown key 'stepz'"):
        train.parse_args(["--config", str(cfg)])
    cfg.write_text("steps = [\n")
    with pytest.raises(UserError, match="not valid TOML"):
        train.parse_args(["--config", str(cfg)])


def run_serial(*argv):
    return train.run(["--dtype", "float64", *QUICK, *argv], MPI.COMM_SELF)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_bitwise_exact(tmp_path, optimizer):
    """A run interrupted after its step-4 checkpoint and resumed equals the straight run."""
    common = ["--optimizer", optimizer, "--steps", "8", "--checkpoint-dir", str(tmp_path),
              "--checkpoint-every", "4"]
    straight = params_of(run_serial(*common))
    os.unlink(tmp_path / "ckpt-00000008.h5")  # as if the job died before step 8
    resumed = run_serial(*common, "--resume")
    assert resumed.step == 8
    for name, value in straight.items():
        np.testing.assert_array_equal(params_of(resumed)[name], value, err_msg=name)


def test_resume_with_other_options_names_the_ones_to_repeat(tmp_path):
    run_serial("--model", "convnet", "--width", "4", "--dataset", "shapes:16:64", "--steps", "1",
               "--checkpoint-dir", str(tmp_path))
    with pytest.raises(UserError) as e:
        run_serial("--steps", "2", "--checkpoint-dir", str(tmp_path), "--resume")
    message = str(e.value)
    assert "--model convnet" in message and "--width 4" in message and "--dataset shapes:16:64" in message
    assert "resume with the same options" in message and len(message) < 400


def test_init_from_and_freeze(tmp_path):
    pre = run_serial("--model", "convnet", "--dataset", "shapes:32", "--steps", "2", "--width", "4",
                     "--save", str(tmp_path / "pre.h5"))
    tuned = run_serial("--model", "convnet", "--dataset", "mnist5k", "--steps", "2", "--width", "4",
                       "--init-from", str(tmp_path / "pre.h5"), "--freeze", "0.,1.")
    before, after = params_of(pre), params_of(tuned)
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])  # same shape (1 channel), frozen
    head = [n for n in after if before[n].shape != after[n].shape]
    assert head == ["22.weight", "22.bias"]  # 6 shape classes -> 10 digits: re-initialised
    assert not np.array_equal(after["3.weight"], before["3.weight"])  # loaded, then trained
    with pytest.raises(UserError, match="matches no parameter"):
        run_serial("--steps", "1", "--freeze", "nothing.")


def test_init_from_weights_that_are_not_finite_is_refused(tmp_path):
    """A pretrained file holding a NaN is named at start, not found as a non-finite loss."""
    from mpicnn.io.safetensors import read_safetensors, write_safetensors
    run_serial("--steps", "1", "--save", str(tmp_path / "pre.h5"))
    tensors = dict(load_checkpoint(str(tmp_path / "pre.h5")).params)
    tensors["3.weight"] = tensors["3.weight"].copy()
    tensors["3.weight"].flat[5] = np.nan
    write_safetensors(str(tmp_path / "nan.safetensors"), tensors)
    assert np.isnan(read_safetensors(str(tmp_path / "nan.safetensors"))[0]["3.weight"]).any()
    with pytest.raises(UserError, match=r"3\.weight hold NaN or Inf; a run cannot start from them"):
        run_serial("--steps", "1", "--init-from", str(tmp_path / "nan.safetensors"))


@pytest.mark.parametrize("model, dataset, says", [
    ("unet3d", "blobs:32:8", "unet3d takes volumes (C, D, H, W), and the dataset holds images (C, H, W); use --model unet"),
    ("unet", "cosmo:16:8", "unet takes images (C, H, W), and the dataset holds volumes (C, D, H, W); use --model cosmoflow"),
    ("unet3d", "cosmo:16:8", "unet3d predicts a class per pixel (segmentation), and the dataset is a regression dataset; use --model cosmoflow"),
    ("unet", "shapes:16:32", "unet predicts a class per pixel (segmentation), and the dataset is a classification dataset; use --model lenet5 or convnet"),
    ("convnet", "blobs:32:8", "convnet predicts one output per sample, and the dataset is a segmentation dataset; use --model unet"),
    ("convnet", "cosmo:16:8", "convnet takes images (C, H, W), and the dataset holds volumes (C, D, H, W); use --model cosmoflow"),
])
def test_a_zoo_model_that_cannot_take_the_datasets_samples_is_refused(model, dataset, says):
    """Images against volumes, per-pixel outputs against one per sample: one line naming
    models that fit, not a shape error from the first layer or the loss."""
    with pytest.raises(UserError, match="^--model " + model + ": ") as e:
        run_serial("--model", model, "--width", "4", "--dataset", dataset, "--batch-size", "4", "--steps", "1")
    assert says in str(e.value)


def test_a_model_dataset_misfit_ends_every_rank_with_one_line(tmp_path):
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--model", "unet", "--width", "4", "--dataset",
                   "cosmo:16:8", "--batch-size", "4", "--steps", "2", "--parallel", "spatial=2x1")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error: --model unet: unet takes images"), proc.stderr


def test_an_unknown_emulator_check_is_one_line_at_start():
    """MPICNN_EMU_CHECK is read at each kernel launch: a typo was a traceback mid-step."""
    proc = run_mpi(1, "-m", "mpicnn.train", "--backend", "emu", "--steps", "1", "--no-progress", "--dataset",
                   "shapes:16:32", "--batch-size", "8", "--model", "convnet", "--width", "4",
                   env=dict(mpi_env(), MPICNN_EMU_CHECK="memcheck,bogus"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mpicnn: error: MPICNN_EMU_CHECK: unknown check 'bogus'; choose from memcheck, synccheck, racecheck, "
        "comma-separated"]
