"""Activation recomputation (open_clip's ``--grad-checkpointing``): a tower's residual blocks
keep only their inputs in the forward pass and are run again, block by block, in the
backward pass, through MindSpore's own ``mindspore.recompute`` (GRAPH and PyNative mode).

A block may change state as it runs: a stochastic layer advances its draw counter
(:mod:`mindclip.models.rng`), a BatchNorm in training moves its running statistics. Run again
as it is, the block would draw other masks than its forward pass did (its gradients would be
those of another network) and advance its states twice. MindSpore restores its own generator
around a recomputation, as torch's ``checkpoint`` does; ours live in Parameters, so the block is
recomputed through :class:`_Replay`, which takes the states' values before the block ran as
inputs: it sets them back before running the block, and afterwards keeps what the block wrote
only on the forward pass. A recomputation is told apart from the forward pass because there
the states still hold what was read just before the call, while when the block is recomputed
they already hold what the forward pass (and any later call of the block) wrote; a state the
block did not change comes out equal either way. In GRAPH mode BatchNorm updates its statistics
inside its kernel, where the replay does not reach, so its primitive is kept out of the
recomputation there (its outputs are kept instead).
"""
from __future__ import annotations

from typing import List, Tuple

import mindspore as ms
from mindspore import nn, ops

from .rng import STATE

# Parameters a block writes while it runs (draw counters, BatchNorm's running statistics of
# MindSpore's nn.BatchNorm* and of our timm BatchNorm); weights are only written by optimizers.
STATE_NAMES = (STATE, "moving_mean", "moving_variance", "running_mean", "running_var")


def _state_owners(block: nn.Cell) -> List[Tuple[nn.Cell, str]]:
    out = []
    for _, cell in block.cells_and_names():
        out += [(cell, name) for name in STATE_NAMES if cell._params.get(name) is not None]  # pylint: disable=protected-access
    return out


class _Replay(nn.Cell):
    """``construct(*saved_states, *args)``: ``block(*args)`` with its states first set to
    ``saved_states``; afterwards they keep what the block wrote on the forward pass only."""

    def __init__(self, block: nn.Cell, owners: List[Tuple[nn.Cell, str]]):
        super().__init__(auto_prefix=False)  # the block's parameters keep their names
        self.block = block
        self.owners = nn.CellList([cell for cell, _ in owners], auto_prefix=False)
        self.names = tuple(name for _, name in owners)
        self.count = len(owners)

    def states(self):
        return tuple(getattr(cell, name) for cell, name in zip(self.owners, self.names))

    def saved(self):
        """Copies of the states' current values (the recomputation must not see later writes)."""
        return tuple(ops.depend(s + 0, s) for s in self.states())

    def construct(self, *inputs):
        saved, args = inputs[:self.count], inputs[self.count:]
        before = self.saved()
        for state, value in zip(self.states(), saved):
            ops.assign(state, ops.depend(value, before))  # not before the copies are taken
        y = self.block(*args)
        kept = ()
        for state, old, value in zip(self.states(), before, saved):
            forward = ops.equal(old, value).all()
            kept += (ops.assign(state, ops.select(forward, state + 0, old)),)
        return ops.depend(y, kept)


class _Recomputed(nn.Cell):
    """One block under recomputation (stateless blocks go to ``mindspore.recompute`` as they are)."""

    def __init__(self, block: nn.Cell):
        super().__init__(auto_prefix=False)
        for _, cell in block.cells_and_names():
            for prim in cell._primitives.values():  # pylint: disable=protected-access
                if prim is not None and prim.name == "BatchNorm":
                    prim.recompute(False)
        owners = _state_owners(block)
        self.replay = _Replay(block, owners) if owners else None
        self.block = block

    def construct(self, *args):
        if self.replay is None:
            return ms.recompute(self.block, *args)
        return ms.recompute(self.replay, *(self.replay.saved() + args))


class Blocks(nn.Cell):
    """A tower's residual blocks (named ``0``, ``1``, … as in ``nn.CellList`` /
    ``nn.SequentialCell``). ``construct(x, *extra)`` runs them in order, each on the previous
    one's output and the same ``extra`` inputs; ``call(i, *args)`` runs block ``i`` alone, for
    towers that thread more than one tensor through their blocks. With grad checkpointing on
    and in training, each block is recomputed in the backward pass."""

    def __init__(self, blocks):
        super().__init__()
        for i, block in enumerate(blocks):
            block.update_parameters_name(f"{i}.")
            self.insert_child_to_cell(str(i), block)
        self.grad_checkpointing = False
        # Plain lists, not child cells (graph mode iterates them; the recomputation wrappers
        # share the blocks, whose parameters keep their names and are listed once).
        self.cell_list = list(self._cells.values())
        self.recomputed = []
        self.graph_mode_limit = None  # why these blocks cannot be recomputed in GRAPH mode

    def __len__(self) -> int:
        return len(self.cell_list)

    def __getitem__(self, index: int) -> nn.Cell:
        return self.cell_list[index]

    def __iter__(self):
        return iter(self.cell_list)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable and self.graph_mode_limit and ms.get_context("mode") == ms.GRAPH_MODE:
            raise ValueError(f"grad checkpointing in GRAPH mode: {self.graph_mode_limit}; it runs "
                             "only in a PyNative loop of your own (the train step always runs in "
                             "GRAPH mode): leave it off otherwise")
        if enable and not self.recomputed:
            self.recomputed = [_Recomputed(b) for b in self.cell_list]
        self.grad_checkpointing = bool(enable)

    def call(self, index: int, *args):
        if self.grad_checkpointing and self.training:
            return self.recomputed[index](*args)
        return self.cell_list[index](*args)

    def construct(self, x, *extra):
        if self.grad_checkpointing and self.training:
            for block in self.recomputed:
                x = block(x, *extra)
        else:
            for block in self.cell_list:
                x = block(x, *extra)
        return x


def _all_blocks(model: nn.Cell) -> List[Blocks]:
    return [cell for _, cell in model.cells_and_names() if isinstance(cell, Blocks)]


def set_grad_checkpointing(model: nn.Cell, enable: bool = True) -> int:
    """Turn recomputation on (or off) for every :class:`Blocks` in ``model``; returns how many
    blocks it covers. Call it before the first training step: a compiled graph keeps the
    setting it was compiled with."""
    found = _all_blocks(model)
    for blocks in found:
        blocks.set_grad_checkpointing(enable)
    return sum(len(blocks) for blocks in found)


def recomputed_blocks(model: nn.Cell) -> List[Blocks]:
    """The :class:`Blocks` of ``model`` with recomputation switched on."""
    return [blocks for blocks in _all_blocks(model) if blocks.grad_checkpointing]


def graph_mode_limits(model: nn.Cell) -> List[str]:
    """Why the recomputation switched on in ``model`` cannot run in GRAPH mode (empty: it can)."""
    return sorted({b.graph_mode_limit for b in recomputed_blocks(model) if b.graph_mode_limit})
