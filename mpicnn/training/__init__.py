"""The training run, by composition (README, Architecture).

- ``model_state``: the model and its state (build, restore, freeze, channel shards,
  optimizer, global layout); ``checkpoints``: writing and pruning them.
- ``batches``: the data, the sample order and this rank's piece of each batch.
- ``figures``: warm-up, timing, progress, metrics, the non-finite decision, summary.
- ``phases``: the named phases of a step and the one hook point for tracers.
- ``layout``: the interface the loop asks of a layout; ``loop.fit``: the one loop.
- Layouts: ``grid_step.GridLayout`` (data/spatial/channel, on ``grid_rank.GridRank``),
  ``pipeline_stage.PipelineStage``, ``ps_worker.PSWorker``, ``ps_server.PSServer``;
  ``roles.make_layout`` picks this rank's.

MPI stays in ``mpicnn.parallel``: layouts hold its communicators and call its helpers.
"""
from .loop import fit
from .roles import make_layout

__all__ = ["fit", "make_layout"]
