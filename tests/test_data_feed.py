"""The data feed on one process: augmentation against a plain NumPy reference (whole
images and every block of them), fixed shards, node-local staging and prefetch.
The layouts' equality with the 1-rank run is in test_data_feed_mpi.py."""
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest

from mpicnn import data, train
from mpicnn.data import Dataset, augment, hdf5, order, write_dataset
from mpicnn.data.stage import StagedSplit, stage
from mpicnn.errors import UserError
from mpicnn.training.prefetch import Prefetch

SMALL = ["--model", "user_models.small:build", "--dataset", "shapes:16:64", "--dtype", "float64", "--batch-size",
         "8", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An image file (uint8, odd sizes) and a volume file (float32)."""
    d = tmp_path_factory.mktemp("feed")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 2, 9, 11), dtype=np.uint8)
    volumes = rng.standard_normal((12, 1, 5, 6, 7)).astype(np.float32)
    squares = rng.integers(0, 256, (16, 2, 10, 10), dtype=np.uint8)
    cubes = rng.standard_normal((10, 1, 6, 6, 6)).astype(np.float32)
    write_dataset(d / "img.h5", {"train": (images, np.arange(20) % 3)})
    write_dataset(d / "vol.h5", {"train": (volumes, np.arange(12) % 2)})
    write_dataset(d / "sq.h5", {"train": (squares, np.arange(16) % 3)})
    write_dataset(d / "cube.h5", {"train": (cubes, np.arange(10) % 2)})
    return {"img": (str(d / "img.h5"), images), "vol": (str(d / "vol.h5"), volumes),
            "sq": (str(d / "sq.h5"), squares), "cube": (str(d / "cube.h5"), cubes)}


def reference(image, offsets, flips, pad, turns=0, plane=None):
    """torchvision's RandomCrop(padding=pad), then flips, then numpy.rot90 by ``turns``
    in the spatial axes ``plane``, on one (C, *spatial) image."""
    padded = np.pad(image, [(0, 0)] + [(pad, pad)] * (image.ndim - 1))
    crop = padded[(slice(None),) + tuple(slice(pad + o, pad + o + n) for o, n in zip(offsets, image.shape[1:]))]
    out = np.flip(crop, axis=tuple(1 + a for a in np.flatnonzero(flips))) if flips.any() else crop
    return np.rot90(out, turns, axes=(1 + plane[0], 1 + plane[1])) if turns else out


def blocks(shape, parts):
    """Every block of a (*spatial) shape cut into ``parts`` per axis, as read() keywords."""
    names = ("depths", "rows", "cols")[3 - len(shape):]
    cuts = [np.array_split(np.arange(n), p) for n, p in zip(shape, parts)]
    for combo in np.ndindex(*parts):
        yield {name: (int(c[i][0]), int(c[i][-1]) + 1) for name, c, i in zip(names, cuts, combo)}


@pytest.mark.parametrize("kind, spec, parts", [("img", "crop:3,flip", (1, 1)), ("img", "crop:4,flip:xy", (3, 2)),
                                               ("img", "flip:y", (2, 1)), ("vol", "crop:2,flip:xyz", (2, 2, 3)),
                                               ("vol", "crop:1", (1, 1, 1)), ("sq", "crop:2,flip,rot90", (1, 1)),
                                               ("sq", "crop:3,flip:xy,rot90", (3, 2)), ("sq", "rot90:yx", (2, 3)),
                                               ("cube", "crop:1,flip:xyz,rot90", (2, 3, 2)),
                                               ("cube", "crop:2,flip:z,rot90:yz", (3, 2, 1)),
                                               ("cube", "rot90:xz", (2, 1, 3))])
@pytest.mark.parametrize("cache_mb", [0, 64])
def test_augmented_blocks_are_blocks_of_the_reference(files, kind, spec, parts, cache_mb):
    path, stored = files[kind]
    aug = augment.parse(spec)
    with Dataset(path, cache_mb=cache_mb) as ds:
        idx = np.array([7, 0, 3, 7, len(stored) - 1, 1, 2, 4, 5, 6])
        spatial = len(ds.shape) - 1
        offsets, flips = aug.draws(5, 2, idx, spatial)
        turns = aug.turns(5, 2, idx)
        assert not aug.plane or len(set(turns.tolist())) > 1  # the samples turn differently
        plane = aug._plane_axes(spatial) if aug.plane else None
        scale = 255.0 if stored.dtype == np.uint8 else 1.0
        whole = np.stack([reference(stored[i], o, f, aug.pad, k, plane)
                          for i, o, f, k in zip(idx, offsets, flips, turns)]) / scale
        for block in blocks(ds.shape[1:], parts):
            x, y = augment.EpochView(ds, aug, 5, 2).read(idx, dtype=np.float64, **block)
            want = whole[(slice(None), slice(None)) + tuple(slice(*block.get(n, (0, s))) for n, s in zip(
                ("depths", "rows", "cols")[3 - len(ds.shape[1:]):], ds.shape[1:]))]
            np.testing.assert_array_equal(x, want)
            np.testing.assert_array_equal(y, ds.labels[idx])


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_segmentation_masks_move_with_their_images(cache_mb):
    aug = augment.parse("crop:5,flip:xy")
    with data.open_dataset("blobs:16:8", cache_mb=cache_mb) as ds:
        idx = np.array([6, 1, 2, 5])
        images, masks = ds.read(idx, dtype=np.float64)
        offsets, flips = aug.draws(0, 3, idx, 2)
        for block in blocks((16, 16), (2, 2)):
            x, y = augment.EpochView(ds, aug, 0, 3).read(idx, dtype=np.float64, **block)
            window = tuple(slice(*block[n]) for n in ("rows", "cols"))
            for k in range(len(idx)):
                want_x = reference(images[k], offsets[k], flips[k], 5)[(slice(None),) + window]
                np.testing.assert_array_equal(x[k], want_x)
                np.testing.assert_array_equal(y[k], reference(masks[k][None], offsets[k], flips[k], 5)[0][window])


def test_draws_are_a_pure_function_of_seed_epoch_and_sample():
    aug = augment.parse("crop:4,flip:xyz")
    idx = np.arange(4000)
    offsets, flips = aug.draws(1, 0, idx, 3)
    assert offsets.min() == -4 and offsets.max() == 4
    assert set(np.unique(offsets)) == set(range(-4, 5))
    assert 0.45 < flips.mean() < 0.55
    # per sample, whatever batch it arrives in
    o2, f2 = aug.draws(1, 0, idx[[17, 3, 999]], 3)
    np.testing.assert_array_equal(o2, offsets[[17, 3, 999]])
    np.testing.assert_array_equal(f2, flips[[17, 3, 999]])
    for seed, epoch in ((2, 0), (1, 1)):
        assert not np.array_equal(aug.draws(seed, epoch, idx, 3)[0], offsets)
    assert not augment.parse("crop:4").draws(1, 0, idx, 3)[1].any()  # no flip asked, none drawn
    assert not augment.parse("crop:4,flip").draws(1, 0, idx, 2)[1][:, 0].any()  # flip = x only


def test_quarter_turns_are_uniform_and_a_pure_function_of_seed_epoch_and_sample():
    aug = augment.parse("crop:2,rot90")
    idx = np.arange(4000)
    turns = aug.turns(1, 0, idx)
    counts = np.bincount(turns, minlength=4)
    assert len(counts) == 4 and all(900 < c < 1100 for c in counts), counts
    np.testing.assert_array_equal(aug.turns(1, 0, idx[[17, 3, 999]]), turns[[17, 3, 999]])
    assert not np.array_equal(aug.turns(1, 1, idx), turns)
    # rot90 adds a draw: the crop offsets and flips stay those of the same spec without it
    np.testing.assert_array_equal(aug.draws(1, 0, idx, 2)[0], augment.parse("crop:2").draws(1, 0, idx, 2)[0])
    assert not augment.parse("crop:2").turns(1, 0, idx).any()


def test_turned_window_reads_stay_inside_the_window(files):
    """A block of a turned image reads only the block turned back (cache off)."""
    path, stored = files["sq"]
    aug = augment.parse("rot90")
    with Dataset(path, cache_mb=0) as ds:
        idx = np.arange(len(stored))
        augment.EpochView(ds, aug, 0, 0).read(idx, rows=(0, 4), cols=(3, 10))
        assert ds.bytes_read == len(idx) * 2 * 4 * 7


@pytest.mark.parametrize("kind, spec, problem", [("img", "rot90", "needs it square"),
                                                 ("sq", "rot90:xz", "turns the depth of volumes"),
                                                 ("vol", "rot90:yz", "needs it square")])
def test_rot90_that_does_not_fit_the_data_is_refused(files, kind, spec, problem):
    with Dataset(files[kind][0]) as ds, pytest.raises(UserError, match=problem):
        augment.parse(spec).check(ds.shape)


def test_a_miss_fills_its_run_of_allowed_samples(files, monkeypatch):
    """After fill_in_runs a missing sample brings the uncached ``allowed`` samples of its
    aligned run with it, in one read; the rest of the run stays unread."""
    path, stored = files["img"]
    monkeypatch.setattr(hdf5, "FILL_RUN_SAMPLES", 8)
    one = stored[0].nbytes
    allowed = [s for s in range(20) if s != 13]
    with Dataset(path) as ds, Dataset(path) as plain:
        ds.fill_in_runs(allowed)
        x, _ = ds.read([10])
        assert ds.bytes_read == 7 * one  # samples 8..15 but 13
        before = ds.bytes_read
        y, _ = ds.read([15, 8, 12, 9])
        assert ds.bytes_read == before  # from the cache
        ds.read([13])
        assert ds.bytes_read == before + one  # not allowed: read alone
        ds.read([19, 3])
        assert ds.bytes_read == before + one + 4 * one + 8 * one  # runs 16..19 and 0..7
        np.testing.assert_array_equal(x, plain.read([10])[0])
        np.testing.assert_array_equal(y, plain.read([15, 8, 12, 9])[0])


@pytest.mark.parametrize("kind", ["img", "vol"])
def test_cached_reads_equal_reads_from_the_file(files, kind, monkeypatch):
    """A batch the cache holds whole is gathered natively (or by NumPy): the same bits as
    the first read, from the file, in both float types."""
    path, stored = files[kind]
    idx = [3, 0, 7, 3, 5]
    for native in ("1", "0"):
        monkeypatch.setenv("MPICNN_NATIVE", native)
        for dtype in (np.float32, np.float64):
            with Dataset(path) as ds:
                first, labels = ds.read(idx, dtype=dtype)
                again, labels_again = ds.read(idx, dtype=dtype)
                assert ds.bytes_read == 4 * stored[0].nbytes  # the second read came from memory
            np.testing.assert_array_equal(again.view(np.uint8), first.view(np.uint8))
            np.testing.assert_array_equal(labels_again, labels)
            assert again.dtype == dtype


def test_large_samples_are_filled_alone(files, monkeypatch):
    """A run is at most FILL_RUN_BYTES of the cached block: one sample when it is larger."""
    path, stored = files["img"]
    monkeypatch.setattr(hdf5, "FILL_RUN_BYTES", stored[0].nbytes)
    with Dataset(path) as ds:
        ds.fill_in_runs(range(20))
        ds.read([5])
        assert ds.bytes_read == stored[0].nbytes


def test_window_reads_stay_inside_the_window(files):
    """A block's reads (cache off) never exceed the block: the offset moves the hyperslab."""
    path, stored = files["img"]
    aug = augment.parse("crop:4,flip")
    with Dataset(path, cache_mb=0) as ds:
        idx = np.arange(len(stored))
        augment.EpochView(ds, aug, 0, 0).read(idx, rows=(0, 4), cols=(5, 11))
        assert 0 < ds.bytes_read <= len(idx) * 2 * 4 * 6


@pytest.mark.parametrize("spec, problem", [("crop", "positive integer"), ("crop:0", "positive integer"),
                                           ("crop:-1", "positive integer"), ("flip:w", "axes other than"),
                                           ("flip:xx", "each once"), ("rotate", "unknown item"),
                                           ("crop:2,crop:3", "given twice"), ("crop:2,,flip", "unknown item"),
                                           ("rot90:x", "names no plane"), ("rot90:xx", "names no plane"),
                                           ("rot90:xw", "names no plane"), ("rot90:xyz", "names no plane")])
def test_bad_specs_are_refused_with_the_fix(spec, problem):
    with pytest.raises(UserError, match=problem):
        augment.parse(spec)


def test_bad_spec_on_the_command_line_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mpicnn.train", "--augment", "crop:four", "--steps", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mpicnn: error: --augment crop:four: crop takes the padding in pixels, a positive integer (crop:4), "
        "got 'crop:four'"]


def test_the_flags_come_from_the_config_file_too(tmp_path):
    from mpicnn.config import parse_args
    (tmp_path / "run.toml").write_text('augment = "crop:4,flip"\ndata-shards = 4\nstage-dir = "/dev/shm/x"\n'
                                       'prefetch = true\n')
    args = parse_args(["--config", str(tmp_path / "run.toml")])
    assert (args.augment, args.data_shards, args.stage_dir, args.prefetch) == ("crop:4,flip", 4, "/dev/shm/x", True)
    (tmp_path / "bad.toml").write_text('augment = "crop:4,blur"\n')
    with pytest.raises(UserError, match="unknown item 'blur'"):
        parse_args(["--config", str(tmp_path / "bad.toml")])


def test_depth_flip_of_images_is_refused():
    with pytest.raises(UserError, match="flip:z flips the depth of volumes"):
        train.run(SMALL + ["--steps", "1", "--augment", "flip:z"], None)


# ---- shards ---------------------------------------------------------------------------

@pytest.mark.parametrize("n, K, B, M", [(103, 4, 16, 1), (64, 4, 16, 2), (50, 1, 10, 1), (40, 8, 8, 1)])
def test_every_batch_takes_its_share_of_every_shard(n, K, B, M):
    bounds = order.shard_bounds(n, K)
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    steps = order.sharded_steps(n, K, B)
    shard_of = np.searchsorted([hi for _, hi in bounds], np.arange(n), side="right")
    for epoch in (0, 1):
        o = order.sharded_order(n, K, B, M, 7, epoch)
        assert len(o) == steps * B and len(np.unique(o)) == len(o)  # no sample twice in an epoch
        layout = shard_of[o].reshape(steps, M, K, B // (K * M))
        assert (layout == np.arange(K)[None, None, :, None]).all()
    assert not np.array_equal(order.sharded_order(n, K, B, M, 7, 0), order.sharded_order(n, K, B, M, 7, 1))
    np.testing.assert_array_equal(order.sharded_order(n, K, B, M, 7, 0), order.sharded_order(n, K, B, M, 7, 0))


def test_a_data_rank_reads_only_its_shards():
    from mpicnn.parallel.batch_plan import pieces
    n, K, B, M, D = 96, 4, 16, 2, 2
    bounds, o = order.shard_bounds(n, K), order.sharded_order(n, K, B, M, 0, 0)
    for rank in range(D):
        lo, hi = bounds[rank * K // D][0], bounds[(rank + 1) * K // D - 1][1]
        for k in range(order.sharded_steps(n, K, B)):
            batch = o[k * B:(k + 1) * B]
            mine = np.concatenate([batch[a:b] for a, b in pieces(B, M, D, rank)])
            assert ((mine >= lo) & (mine < hi)).all()


@pytest.mark.parametrize("argv, problem", [(["--data-shards", "3"], "multiple of 3"),
                                           (["--data-shards", "4", "--micro-batches", "4"], "multiple of 4 times 4"),
                                           (["--data-shards", "65"], "more than the 64")])
def test_bad_shard_counts_are_refused(argv, problem):
    with pytest.raises(UserError, match=problem):
        train.run(SMALL + ["--steps", "1"] + argv, None)


# ---- staging --------------------------------------------------------------------------

def test_staged_copy_holds_only_the_asked_samples_and_is_reused(files, tmp_path):
    path, stored = files["img"]
    want = np.arange(5, 15)
    with Dataset(path) as ds:
        staged, nbytes = stage(ds, want, str(tmp_path / "st"))
        assert nbytes == stored[want].nbytes  # only those samples were read
        assert stage(ds, want, str(tmp_path / "st")) == (staged, 0)  # the next run reuses it
        assert os.listdir(tmp_path / "st") == [os.path.basename(staged)]  # no temp file left
    with Dataset(path) as source:
        split = StagedSplit(source, staged)
        assert split.local.num_samples == len(want)
        x, y = split.read([14, 5, 9], rows=(1, 8))
        before = source.bytes_read
        with Dataset(path) as direct:
            xd, yd = direct.read([14, 5, 9], rows=(1, 8))
        np.testing.assert_array_equal(x, xd)
        np.testing.assert_array_equal(y, yd)
        assert source.bytes_read == before == 0  # read from the copy
        split.local.close()


def test_a_staged_copy_fills_runs_of_the_allowed_samples_it_holds(files, tmp_path, monkeypatch):
    """fill_in_runs on a staged split takes the global indices of the samples it may read."""
    path, stored = files["img"]
    monkeypatch.setattr(hdf5, "FILL_RUN_SAMPLES", 4)
    with Dataset(path) as source:
        staged, _ = stage(source, np.arange(5, 15), str(tmp_path / "st"))
        split, staging = StagedSplit(source, staged), source.bytes_read
        split.fill_in_runs([3, 5, 6, 8, 9, 10])  # 3 is not in the copy; copy positions 0, 1, 3, 4, 5
        x, _ = split.read([9])  # position 4: its run is positions 4..7, of which 4 and 5 allowed
        assert split.local.bytes_read == 2 * stored[0].nbytes and source.bytes_read == staging
        np.testing.assert_array_equal(x[0], stored[9] / np.float32(255))
        split.local.close()


def test_staged_run_reads_nothing_from_the_shared_file_and_equals_the_plain_run(tmp_path):
    argv = SMALL + ["--steps", "12", "--data-shards", "4", "--augment", "crop:2,flip"]
    plain = train.run(argv, None)
    staged = train.run(argv + ["--stage-dir", str(tmp_path)], None)
    reads = staged.summary["data_reads"]
    assert reads["shared_bytes_per_rank_epoch"] == [[0, 0]]  # 8 steps per epoch: two epochs
    with data.open_dataset("shapes:16:64") as ds:
        whole = ds.num_samples * int(np.prod(ds.shape)) * ds.dtype.itemsize
    assert reads["staging"][0]["samples"] == 64 and reads["staging"][0]["bytes_read"] == whole
    assert plain.summary["data_reads"]["shared_bytes_per_rank_epoch"][0][0] > 0
    for name, p in plain.params.items():
        np.testing.assert_array_equal(staged.params[name], p)


# ---- prefetch -------------------------------------------------------------------------

def test_prefetch_equals_no_prefetch_bit_for_bit():
    argv = SMALL + ["--steps", "10", "--augment", "crop:3,flip"]
    a, b = train.run(argv + ["--prefetch"], None), train.run(argv, None)
    for name, p in b.params.items():
        np.testing.assert_array_equal(a.params[name], p)
    assert a.summary["test_loss"] == b.summary["test_loss"]


def test_prefetch_starts_the_read_as_backward_reaches_the_last_conv(monkeypatch):
    """The reader's own Python holds the GIL: it starts where the step needs it least,
    inside the last convolution's backward (native kernels), once a step; a model
    without a convolution starts it as backward begins."""
    from mpicnn.training.batches import Batches
    from mpicnn.training.grid_step import GridLayout
    starts = []
    read_ahead = Batches.read_ahead

    def spy(self, step, read=None):
        starts.append((step, [f.name for f in traceback.extract_stack()]))
        return read_ahead(self, step, read)
    monkeypatch.setattr(Batches, "read_ahead", spy)
    train.run(SMALL + ["--steps", "4", "--prefetch"], None)
    assert [step for step, _ in starts] == [0, 1, 2, 3]
    assert all("read_ahead_then_backward" in stack for _, stack in starts)
    starts.clear()
    train.run(SMALL[:1] + ["user_models.small:linear_only"] + SMALL[2:] + ["--steps", "2", "--prefetch"], None)
    assert [step for step, _ in starts] == [0, 1]
    assert all("read_ahead_then_backward" not in stack and GridLayout.compute.__name__ in stack
               for _, stack in starts)


def test_prefetch_keeps_fault_and_stop_behaviour(tmp_path):
    """Under --prefetch an exception on one rank still aborts the job, and a stop request
    (SIGTERM's path) still checkpoints and resumes to the uninterrupted run's weights."""
    from launch import mpi_env, run_mpi
    train_argv = ["-m", "mpicnn.train", "--no-progress", "--batch-size", "32", "--prefetch", "--augment", "crop:2"]
    proc = run_mpi(2, *train_argv, "--steps", "50", env=mpi_env(MPICNN_INJECT_FAULT="raise@rank1:step3"), timeout=60)
    assert proc.returncode != 0 and "InjectedFault" in proc.stderr
    ckpt = tmp_path / "ck"
    argv = train_argv[2:] + ["--steps", "12", "--dtype", "float64", "--optimizer", "sgd"]
    os.environ["MPICNN_INJECT_FAULT"] = "term@step5"
    try:
        stopped = train.run(argv + ["--checkpoint-dir", str(ckpt)], None)
    finally:
        del os.environ["MPICNN_INJECT_FAULT"]
    assert stopped.step == 6
    resumed = train.run(argv + ["--checkpoint-dir", str(ckpt), "--resume"], None)
    straight = train.run(argv, None)
    for name, p in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], p)


def test_prefetch_drops_a_batch_read_for_other_pieces_and_raises_its_errors():
    fetch = Prefetch()
    calls = []
    fetch.ahead((1, [(0, 4)]), lambda: calls.append("ahead") or "old")
    assert fetch.take((1, [(0, 3)]), lambda: calls.append("here") or "new") == "new"
    assert calls == ["ahead", "here"]
    fetch.ahead((2, [(0, 4)]), lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        fetch.take((2, [(0, 4)]), lambda: "unused")
    fetch.close()
