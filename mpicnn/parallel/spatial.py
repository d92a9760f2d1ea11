"""Spatial parallelism: the layers' view of feature maps split over height and width.

Each rank of a P x Q spatial grid holds, for every 4-D feature map, the balanced
block ``block_range(H, P, row) x block_range(W, Q, col)`` of its samples. Layers ask
this context (they never see MPI):

- ``window_apply`` (or ``window_input``) / ``window_saved_input`` / ``window_input_grad``:
  halo exchange around a conv or pool, the op's input again for backward (rebuilt from
  the layer's x and the saved halo bands), and the adjoint exchange (``halo.py``,
  geometry in ``halo_geometry.py``). The op runs with padding 0 on the halo buffer and
  produces exactly this rank's output block.
- ``global_hw``: the global (H, W) of a layer's input. Derived once per layer from the
  local sizes (one 2-int Allreduce over the spatial communicator) and cached per layer
  and local shape. Image sizes are fixed per run, so every rank takes the cached path
  at the same calls; the local block is checked against the balanced layout.
- ``spatial_reduce``: sums/max/min over the spatial blocks (global pooling).
- ``allreduce_stats``: BatchNorm statistics over the spatial blocks ALWAYS (one
  sample's pixels are spread over them), and over the data ranks too with --sync-bn.

Replicated tail: past a global pool every spatial rank holds the same (N, C) values
and computes the same head. Weight gradients are summed over sample x spatial (the
trainer's buckets), which would count the head's gradients S = P*Q times. So the
trainer back-propagates 1/S of the loss gradient on each rank, and the global pool,
the seam back into split maps, multiplies its incoming gradient by ``grad_seam = S``:
replicated parameters sum to one copy, split ones get the full gradient.
"""
import os
import time

import numpy as np
from mpi4py import MPI

from .. import backend
from ..errors import UserError
from . import events
from .blocks import block_range
from .data_parallel import DataParallelContext
from .device_buffers import MPIBuffer
from .halo import Halo, gather_and_apply, gather_halo, need_view, rebuild, save_bands, scatter_halo_grad
from .halo3d import Halo3d, gather_halo3d, scatter_halo3d_grad
from .halo_geometry import axis_plan, plan_2d, smallest_grid_note, upsample_axis_plan, upsample_plan_2d

_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
OVERLAP_ENV = "MPICNN_HALO_OVERLAP"


class SpatialContext(DataParallelContext):
    spatial = True

    def __init__(self, grid, sync_bn=False):
        super().__init__(grid.data, sync_bn)
        self.grid = grid
        self.shape = grid.spec.spatial  # (P, Q)
        self.coords = grid.spatial_coords
        self.depth, self.depth_coord = grid.spec.depth, grid.depth_coord  # volumes: depth blocks
        self.grad_seam = grid.spec.blocks
        # BatchNorm: the spatial blocks always; the samples of other data ranks with --sync-bn.
        self.bn_comm = grid.replicas if self.sync_bn else grid.spatial
        self._sizes = {}   # (id(layer), h, w) -> (H, W)
        self._plans = {}   # (id(layer), h, w) -> Halo
        self.names = {}    # id(layer) -> dotted name, for errors and the bench
        self.stats = {}    # name -> {"bytes", "forward_wait_s", "backward_wait_s", "calls"}
        self.overlap = self._overlap_default(grid.spatial)

    @staticmethod
    def _overlap_default(comm):
        """Whether window ops compute their interior while halos travel.

        ``MPICNN_HALO_OVERLAP=1|0`` decides; by default only when the spatial blocks
        span several nodes. Within a node MPI moves data only inside MPI calls (FACTS.md),
        so overlap needs chunked compute with progress calls, and on the 2-core test
        machine that cost more than the ~2% of the step spent waiting for halos
        (convnet 256^2, 2x1: 18.3 images/s with overlap, 20.1 without; python -m
        mpicnn.bench spatial). Across nodes the network moves the data meanwhile.
        """
        value = os.environ.get(OVERLAP_ENV, "").strip()
        if value in ("0", "1"):
            return value == "1"
        if value:
            raise UserError(f"{OVERLAP_ENV}={value!r}: use 1 (compute the interior while halos travel) "
                            "or 0 (exchange first)")
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        spans_nodes = node.Get_size() < comm.Get_size()
        node.Free()
        return comm.allreduce(int(spans_nodes), op=MPI.MAX) == 1

    def name_layers(self, model):
        def walk(module, prefix):
            for name, child in module.named_children():
                self.names[id(child)] = prefix + name
                walk(child, prefix + name + ".")
        walk(model, "")

    def _name(self, layer):
        return f"layer {self.names.get(id(layer), '?')} ({layer!r})"

    # ---- reductions ------------------------------------------------------------
    def allreduce_stats(self, array):
        t0 = time.perf_counter()
        self.bn_comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        events.count(time.perf_counter() - t0)
        rec = events.recorder
        if rec:
            rec.span("compute", "allreduce batchnorm statistics", t0, time.perf_counter(), layer=rec.layer,
                     bytes=int(array.nbytes))
        return array

    def spatial_reduce(self, array, op="sum"):
        """Reduce ``array`` (host or device) in place over the spatial blocks."""
        t0 = time.perf_counter()
        staged = MPIBuffer(array)
        staged.before()
        self.grid.spatial.Allreduce(MPI.IN_PLACE, staged.buf, op=_OPS[op])
        staged.after()
        events.count(time.perf_counter() - t0)
        rec = events.recorder
        if rec:
            rec.span("compute", f"spatial allreduce {op}", t0, time.perf_counter(), layer=rec.layer,
                     bytes=int(array.nbytes))
        return array

    # ---- sizes -----------------------------------------------------------------
    def global_hw(self, layer, local_hw):
        """Global (H, W) of the map whose local block ``layer`` sees."""
        key = (id(layer), int(local_hw[0]), int(local_hw[1]))
        hw = self._sizes.get(key)
        if hw is None:
            (r, c) = self.coords
            mine = np.array([local_hw[0] if c == 0 else 0, local_hw[1] if r == 0 else 0], np.int64)
            self.grid.spatial.Allreduce(MPI.IN_PLACE, mine, op=MPI.SUM)
            hw = (int(mine[0]), int(mine[1]))
            expect = (block_range(hw[0], self.shape[0], r), block_range(hw[1], self.shape[1], c))
            sizes = tuple(b - a for a, b in expect)
            bad = np.array([sizes != tuple(local_hw)], np.int64)
            self.grid.spatial.Allreduce(MPI.IN_PLACE, bad, op=MPI.MAX)
            if bad[0]:
                raise UserError(f"{self._name(layer)}: the input blocks do not form a balanced "
                                f"{self.shape[0]}x{self.shape[1]} split of a {hw[0]}x{hw[1]} map "
                                f"(this rank has {tuple(local_hw)}, expected {sizes}); every layer "
                                "must keep each rank's block of the output rows and columns")
            self._sizes[key] = hw
        return hw

    def global_dhw(self, layer, local_dhw):
        """Global (D, H, W) of the volume whose local block ``layer`` sees (as ``global_hw``)."""
        key = (id(layer), "dhw") + tuple(int(v) for v in local_dhw)
        dhw = self._sizes.get(key)
        if dhw is None:
            parts, coords = (self.depth,) + tuple(self.shape), (self.depth_coord,) + tuple(self.coords)
            # each axis's length: the blocks along it that sit at coordinate 0 on the others
            mine = np.array([local_dhw[a] if all(coords[b] == 0 for b in range(3) if b != a) else 0
                             for a in range(3)], np.int64)
            self.grid.spatial.Allreduce(MPI.IN_PLACE, mine, op=MPI.SUM)
            dhw = tuple(int(v) for v in mine)
            expect = tuple(block_range(dhw[a], parts[a], coords[a]) for a in range(3))
            sizes = tuple(b - a for a, b in expect)
            bad = np.array([sizes != tuple(local_dhw)], np.int64)
            self.grid.spatial.Allreduce(MPI.IN_PLACE, bad, op=MPI.MAX)
            if bad[0]:
                raise UserError(f"{self._name(layer)}: the input blocks do not form a balanced "
                                f"{'x'.join(map(str, parts))} split of a {'x'.join(map(str, dhw))} volume "
                                f"(this rank has {tuple(local_dhw)}, expected {sizes})")
            self._sizes[key] = dhw
        return dhw

    def volume_origin(self, layer, local_dhw):
        """((d0, D), (h0, H), (w0, W)): global offset of this rank's block and the global size."""
        dhw = self.global_dhw(layer, local_dhw)
        parts, coords = (self.depth,) + tuple(self.shape), (self.depth_coord,) + tuple(self.coords)
        return tuple((block_range(dhw[a], parts[a], coords[a])[0], dhw[a]) for a in range(3))

    def volume_window(self, layer, x, kernel, stride, padding, dilation, fill):
        """Input of a 3-D window op over this rank's output block: ``x`` (N, C, d, h, w)
        with halos (three phases, ``halo3d``) and ``fill`` padding; run the op with padding
        0 on it. Returns (input, handle for ``volume_input_grad``)."""
        key = (id(layer), "3d") + tuple(int(v) for v in x.shape[2:])
        halo = self._plans.get(key)
        if halo is None:
            dhw = self.global_dhw(layer, x.shape[2:])
            parts, coords = (self.depth,) + tuple(self.shape), (self.depth_coord,) + tuple(self.coords)
            try:
                halo = Halo3d(tuple(axis_plan(dhw[a], kernel[a], stride[a], padding[a], dilation[a], parts[a],
                                              coords[a], ("depths", "rows", "columns")[a]) for a in range(3)))
            except ValueError as e:
                fits = [max(1, min(dhw[a], (dhw[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1)
                                   // stride[a] + 1)) for a in range(3)]
                error = UserError(f"{self._name(layer)} under --parallel spatial={'x'.join(map(str, parts))}: "
                                  f"{e}; a layer of input {'x'.join(map(str, dhw))} splits into at most "
                                  f"{'x'.join(map(str, fits))} blocks; use a smaller grid or larger volumes")
                error.agreed = True  # a pure function of global sizes: every rank raises it
                raise error
            self._plans[key] = halo
        xin, (nbytes, waited) = gather_halo3d(halo, x, fill, self._volume_comms())
        self._count(layer, nbytes, waited, "forward")
        return xin, (layer, halo)

    def volume_upsample_input(self, layer, x, factors):
        """As ``upsample_input`` for volumes (N, C, d, h, w): the input this rank's balanced
        output block copies, and (depth, row, column) offsets of that block inside it."""
        key = (id(layer), "up3d") + tuple(int(v) for v in x.shape[2:])
        halo = self._plans.get(key)
        if halo is None:
            dhw = self.global_dhw(layer, x.shape[2:])
            parts, coords = (self.depth,) + tuple(self.shape), (self.depth_coord,) + tuple(self.coords)
            try:
                halo = Halo3d(tuple(upsample_axis_plan(dhw[a], factors[a], parts[a], coords[a],
                                                       ("depths", "rows", "columns")[a]) for a in range(3)))
            except ValueError as e:
                error = UserError(f"{self._name(layer)} under --parallel spatial={'x'.join(map(str, parts))}: "
                                  f"{e}; use fewer blocks or larger volumes")
                error.agreed = True  # a pure function of global sizes: every rank raises it
                raise error
            self._plans[key] = halo
        xin, (nbytes, waited) = gather_halo3d(halo, x, 0.0, self._volume_comms())
        self._count(layer, nbytes, waited, "forward")
        offset = tuple(plan.out[0] - f * plan.need[0] for plan, f in zip(halo.axes, factors))
        return xin, (layer, halo), offset

    def volume_input_grad(self, handle, dneed):
        """Adjoint of ``volume_window``: gradient of the op's input -> of this rank's x."""
        layer, halo = handle
        dx, (nbytes, waited) = scatter_halo3d_grad(halo, dneed, self._volume_comms())
        self._count(layer, nbytes, waited, "backward")
        return dx

    def _volume_comms(self):
        return self.grid.depth, self.grid.height, self.grid.width

    def origin(self, layer, local_hw):
        """((h0, H), (w0, W)): global offset of this rank's block and the global size."""
        H, W = self.global_hw(layer, local_hw)
        r, c = self.coords
        return (block_range(H, self.shape[0], r)[0], H), (block_range(W, self.shape[1], c)[0], W)

    # ---- halo exchange -----------------------------------------------------------
    def _halo(self, layer, local_hw, kernel, stride, padding, dilation):
        key = (id(layer), int(local_hw[0]), int(local_hw[1]))
        halo = self._plans.get(key)
        if halo is None:
            hw = self.global_hw(layer, local_hw)
            try:
                halo = Halo(*plan_2d(hw, kernel, stride, padding, dilation, self.shape, self.coords))
            except ValueError as e:
                # Pure geometry of global sizes: every rank raises the same error here.
                error = UserError(f"{self._name(layer)} under --parallel spatial="
                                  f"{self.shape[0]}x{self.shape[1]}: {e}; "
                                  f"{smallest_grid_note(hw, kernel, stride, padding, dilation, self.shape)}")
                error.agreed = True  # a pure function of global sizes: every rank raises it
                raise error
            self._plans[key] = halo
        return halo

    def _count(self, layer, nbytes, waited, direction):
        st = self.stats.setdefault(self.names.get(id(layer), repr(layer)),
                                   {"bytes": 0, "forward_wait_s": 0.0, "backward_wait_s": 0.0, "calls": 0})
        st["bytes"] += nbytes
        st[direction + "_wait_s"] += waited
        events.count(waited)
        st["calls"] += direction == "forward"

    def window_input(self, layer, x, kernel, stride, padding, dilation=(1, 1), fill=0.0):
        """Input of a window op over this rank's output block: ``x`` (N, h, w, C) with its
        halos and padding (``fill``); run the op on it with padding 0. Returns
        (input, handle for ``window_saved_input`` and ``window_input_grad``)."""
        halo = self._halo(layer, x.shape[1:3], kernel, stride, padding, dilation)
        buf, (nbytes, waited) = gather_halo(halo, x, fill, self.grid.height, self.grid.width)
        self._count(layer, nbytes, waited, "forward")
        return need_view(halo, buf), (layer, halo, save_bands(halo, buf))

    def upsample_input(self, layer, x, factors):
        """Input rows and columns of nearest upsampling by ``factors`` over this rank's
        balanced output block (a halo from the neighbours when the sizes are uneven).
        Returns (input, handle for ``window_input_grad``, (row offset, column offset) of
        the output block inside the upsampled input)."""
        key = (id(layer), "upsample", int(x.shape[1]), int(x.shape[2]))
        halo = self._plans.get(key)
        if halo is None:
            hw = self.global_hw(layer, x.shape[1:3])
            try:
                halo = Halo(*upsample_plan_2d(hw, factors, self.shape, self.coords))
            except ValueError as e:
                error = UserError(f"{self._name(layer)} under --parallel spatial={self.shape[0]}x{self.shape[1]}: "
                                  f"{e}; use fewer blocks or larger images")
                error.agreed = True  # a pure function of global sizes: every rank raises it
                raise error
            self._plans[key] = halo
        buf, (nbytes, waited) = gather_halo(halo, x, 0.0, self.grid.height, self.grid.width)
        self._count(layer, nbytes, waited, "forward")
        offset = tuple(plan.out[0] - f * plan.need[0] for plan, f in zip((halo.rows, halo.cols), factors))
        return need_view(halo, buf), (layer, halo, ()), offset

    def window_apply(self, layer, x, kernel, stride, padding, dilation, fill, op):
        """``op`` (the layer's window op with padding 0, a function of its input) over
        this rank's output block, the interior computed while the halos travel
        (``halo.gather_and_apply``; ``MPICNN_HALO_OVERLAP=0``: exchange first).
        Returns (output, handle for ``window_saved_input`` and ``window_input_grad``).

        The layer keeps its own ``x`` for backward, not the halo buffer: the handle
        holds only the halo bands, so saved activations stay ~1/(P*Q) of the serial run's.
        """
        if not self.overlap:
            xin, handle = self.window_input(layer, x, kernel, stride, padding, dilation, fill)
            return op(xin), handle
        halo = self._halo(layer, x.shape[1:3], kernel, stride, padding, dilation)
        y, buf, (nbytes, waited) = gather_and_apply(halo, x, fill, self.grid.height, self.grid.width, op,
                                                    contiguous=backend.runs_kernels())
        self._count(layer, nbytes, waited, "forward")
        return y, (layer, halo, save_bands(halo, buf))

    def window_saved_input(self, handle, x):
        """The op's input of the forward pass again, from the layer's ``x`` and the halo
        bands in ``handle`` (no communication)."""
        _, halo, bands = handle
        return need_view(halo, rebuild(halo, x, bands))

    def window_input_shape(self, handle, xshape):
        """Shape of the op's input for a layer whose local input has shape ``xshape``."""
        _, halo, _ = handle
        (a, b), (c, d) = halo.need
        return (xshape[0], b - a, d - c, xshape[3])

    # ---- windows of one's own (nn.Module.window_input, touches = nn.Window(...)) ---------
    def user_window_input(self, layer, x, geometry, fill):
        """A user's window layer's input in its own layout, NCHW (or NCDHW): ``x`` with
        halos and ``fill`` padding, the rows and columns its output block reads. The same
        exchange as the built-in convs and pools (volumes: ``volume_window``). Returns
        (input, handle for ``user_window_input_grad``)."""
        xp = backend.array_module(x)
        if x.ndim == 5:
            xin, handle = self.volume_window(layer, x, *geometry, fill)
            return xin, (3, handle)
        if x.ndim != 4:
            raise ValueError(f"{self._name(layer)}: window_input takes (N, C, h, w) or (N, C, d, h, w) "
                             f"arrays, got shape {x.shape}")
        xin, handle = self.window_input(layer, xp.ascontiguousarray(x.transpose(0, 2, 3, 1)), *geometry, fill)
        return xp.ascontiguousarray(xin.transpose(0, 3, 1, 2)), (2, handle)

    def user_window_input_grad(self, handle, dxin):
        """Adjoint of ``user_window_input``: the gradient of its result -> that of ``x``."""
        axes, handle = handle
        if axes == 3:
            return self.volume_input_grad(handle, dxin)
        xp = backend.array_module(dxin)
        dx = self.window_input_grad(handle, xp.ascontiguousarray(dxin.transpose(0, 2, 3, 1)))
        return xp.ascontiguousarray(dx.transpose(0, 3, 1, 2))

    def window_input_grad(self, handle, dbuf):
        """Adjoint of ``window_input``: gradient of the op's input -> gradient of this rank's x."""
        layer, halo, _ = handle
        dx, (nbytes, waited) = scatter_halo_grad(halo, dbuf, self.grid.height, self.grid.width)
        self._count(layer, nbytes, waited, "backward")
        return dx


def make_context(grid, sync_bn):
    """The context of a run: spatial when the grid splits height or width."""
    if grid.spec.blocks == 1:
        return DataParallelContext(grid.data, sync_bn)
    return SpatialContext(grid, sync_bn)
