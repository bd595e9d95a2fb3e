"""Channel-wise e3nn tensor products evaluated as batched matrix products (and e3nn's own code as the
reference they are tested against)."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from e3nn import o3

from phisnet.torchtools import default_dtype, kept_while_unchanged

# ----------------------------------------------------------------------------- layers


def uniform_irreps(channels: int, lmax: int) -> o3.Irreps:
    return o3.Irreps([(channels, (l, 1)) for l in range(lmax + 1)])


def _channelwise(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, lmax: int, mode: str):
    """Sorted output irreps and instructions for every path l1 x l2 -> L <= lmax, one channel per u."""
    out, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir in ir1 * ir2:
                if ir.l <= lmax:
                    instructions.append((i1, i2, len(out), mode, True))
                    out.append((mul, (ir.l, 1)))
    irreps_sorted, perm, _ = o3.Irreps(out).sort()
    return irreps_sorted, [(i1, i2, perm[io], m, w) for i1, i2, io, m, w in instructions]


def tensor_product_uvu(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, lmax: int) -> ChannelwiseTensorProduct:
    """Channel-wise tensor product of features with spherical harmonics, per-edge weights."""
    return ChannelwiseTensorProduct(irreps_in1, irreps_in2, lmax, "uvu")


def tensor_product_uuu(irreps: o3.Irreps, lmax: int) -> ChannelwiseTensorProduct:
    """Channel-wise product of two feature vectors of the same irreps, learned path weights."""
    return ChannelwiseTensorProduct(irreps, irreps, lmax, "uuu")


@functools.cache
def _one_channel_coupling(orders1: int, orders2: int, lmax: int, mode: str) -> torch.Tensor:
    """T [d1, d2, K] of a channel-wise product of one channel (k in e3nn's output order), from e3nn's own forward.

    e3nn's normalisation of the modes "uvu" and "uuu" does not depend on the number of channels, so a one-channel
    twin gives every ChannelwiseTensorProduct of these orders its coupling; cached, since building the twin runs
    e3nn's code generation.
    """
    irreps1, irreps2 = uniform_irreps(1, orders1 - 1), uniform_irreps(1, orders2 - 1)
    irreps_out, instructions = _channelwise(irreps1, irreps2, lmax, mode)
    with default_dtype(torch.float64):
        twin = o3.TensorProduct(
            irreps1,
            irreps2,
            irreps_out,
            instructions,
            shared_weights=mode != "uvu",
            internal_weights=False,
            _optimize_einsums=False,  # the twin runs once: optimising its einsums cost seconds per model load
        )
    d1, d2 = irreps1.dim, irreps2.dim
    x1 = torch.eye(d1, dtype=torch.float64).repeat_interleave(d2, dim=0)  # [d1 d2, d1]
    x2 = torch.eye(d2, dtype=torch.float64).repeat(d1, 1)  # [d1 d2, d2]
    weight = torch.ones(twin.weight_numel, dtype=torch.float64)
    if mode == "uvu":
        weight = weight.expand(d1 * d2, -1)
    with torch.no_grad():
        return twin(x1, x2, weight).reshape(d1, d2, -1)


class ChannelwiseTensorProduct(o3.TensorProduct):
    """e3nn's TensorProduct for the channel-wise products above, evaluated with a few large matrix products.

    e3nn evaluates one small contraction per path (65 of them at lmax 4), and predicting a small molecule spends most
    of its time in the per-call overhead of those (``benchmarks/inference.py`` prints both). This class keeps e3nn's
    module as it is (irreps, instructions, weights and their layout, so checkpoints load unchanged), reads the dense
    coupling tensor ``T[i, j, k]`` of one channel out of e3nn's own forward once, at construction, and computes
    ``sum_ij x1[i, u] x2[j, u or 0] T[i, j, k]`` with one batched matrix product per order l1 of x1 (T is
    block-sparse in l1), then the path weights.

    ``internal`` returns the result as blocks, one per (l1, L): ``[items, 2L+1, paths, U]``, channels last, so that
    the o3.Linear that follows every product here (``project``) is a matrix product per block without reordering.
    ``forward`` returns e3nn's layout; ``forward_e3nn`` is e3nn's own evaluation, which the tests compare against.

    Inputs: ``irreps_in1`` is ``U x 0e + U x 1e + ... + U x lmax e``; ``irreps_in2`` the same orders with one channel
    each ("uvu": spherical harmonics) or U channels ("uuu").
    """

    #: True (set through ``e3nn_reference()``): ``internal`` and ``project`` use e3nn's own TensorProduct and Linear.
    reference = False

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, lmax: int, mode: str):
        irreps_out, instructions = _channelwise(irreps_in1, irreps_in2, lmax, mode)
        per_edge = mode == "uvu"
        super().__init__(  # e3nn's generated forward is only the reference (forward_e3nn): no einsum optimisation,
            irreps_in1,  # which took most of a model's load time (5 of 11 s for ethanol on a busy CPU)
            irreps_in2,
            irreps_out,
            instructions,
            shared_weights=not per_edge,
            internal_weights=not per_edge,
            _optimize_einsums=False,
        )
        U = irreps_in1[0].mul
        if [(mul, ir.l) for mul, ir in irreps_in1] != [(U, l) for l in range(len(irreps_in1))] or [
            (mul, ir.l) for mul, ir in irreps_in2
        ] != [(1 if per_edge else U, l) for l in range(len(irreps_in2))]:
            raise ValueError(f"ChannelwiseTensorProduct needs uniform irreps, got {irreps_in1} and {irreps_in2}.")
        self.mode, self.channels = mode, U
        # e3nn's output slots (one per path) are sorted by L, then by l1: the paths of one (l1, L) are a run of slots.
        slot_path = torch.empty(len(irreps_out), dtype=torch.long)
        slot_l1 = torch.empty(len(irreps_out), dtype=torch.long)
        for p, ins in enumerate(instructions):  # (i_in1, i_in2, i_out, mode, has_weight): slot i_out, weights p
            slot_path[ins[2]], slot_l1[ins[2]] = p, irreps_in1[ins[0]].ir.l
        self.register_buffer("slot_path", slot_path, persistent=False)
        Ls = sorted({ir.l for _, ir in irreps_out})
        self.first_slot = [min(s for s, (_, ir) in enumerate(irreps_out) if ir.l == L) for L in Ls]
        self.blocks = []  # (l1, index of L, 2L+1, first slot, end slot)
        T = _one_channel_coupling(len(irreps_in1), len(irreps_in2), lmax, mode)  # [d1, d2, K]
        for l1 in range(len(irreps_in1)):
            columns = self._block_columns(l1, Ls, irreps_out, slot_l1)
            self.register_buffer(f"coupling_{l1}", self._coupling_block(T, l1, columns, per_edge), persistent=False)
        self.sizes_in1, self.sizes_in2 = (
            [(mul * ir.dim, ir.dim) for mul, ir in irreps] for irreps in (irreps_in1, irreps_in2)
        )
        # Pieces are cut with torch.split, not one slice each: a slice's backward fills a zero tensor of the whole
        # input, a split's backward concatenates once (a training step spent a fifth of its time in slice backward).
        self.rows = [[d * (s1 - s0) for l, _, d, s0, s1 in self.blocks if l == l1] for l1 in range(len(irreps_in1))]
        self.block_paths = [s1 - s0 for *_, s0, s1 in self.blocks]
        block_slots = torch.cat([torch.arange(s0, s1) for *_, s0, s1 in self.blocks])
        self.register_buffer("block_path", slot_path[block_slots], persistent=False)  # weights in block order

    def _block_columns(self, l1: int, Ls: list[int], irreps_out: o3.Irreps, slot_l1: torch.Tensor) -> list[int]:
        """The columns k of the coupling tensor for the paths of x1's order ``l1``, in the internal order (L, M,
        path); appends this l1's (l1, L) blocks to ``self.blocks``."""
        one_channel = o3.Irreps([(1, ir) for _, ir in irreps_out])
        columns = []
        for i, L in enumerate(Ls):
            run = [s for s, (_, ir) in enumerate(irreps_out) if ir.l == L and slot_l1[s] == l1]
            if run:
                if run != list(range(run[0], run[-1] + 1)):  # e3nn sorts slots stably by L: never for these
                    raise ValueError(f"the paths {l1} x . -> {L} are not consecutive in e3nn's output")
                self.blocks.append((l1, i, 2 * L + 1, run[0], run[-1] + 1))
                starts = [one_channel.slices()[s].start for s in run]
                columns += [start + M for M in range(2 * L + 1) for start in starts]
        return columns

    @staticmethod
    def _coupling_block(T: torch.Tensor, l1: int, columns: list[int], per_edge: bool) -> torch.Tensor:
        """This l1's part of T laid out for its matrix product: [d2, K_l1 (2l1+1)] per edge, else
        [K_l1, (2l1+1) d2]."""
        d2 = T.shape[1]
        block = T[l1 * l1 : (l1 + 1) ** 2][:, :, columns]  # [2l1+1, d2, K_l1]
        if per_edge:  # x2 first: A[e, k, i] = sum_j x2[e, j] T[i, j, k]
            block = block.permute(1, 2, 0).reshape(d2, -1)
        else:  # the outer product first: rows (i, j)
            block = block.reshape(-1, len(columns)).T
        return block.contiguous().to(torch.get_default_dtype())

    @staticmethod
    def _channels_last(x: torch.Tensor, sizes) -> list[torch.Tensor]:
        """e3nn's layout [E, irreps] (per order: [mul, 2l+1]) -> per order a view [E, 2l+1, mul]."""
        pieces = torch.split(x, [n for n, _ in sizes], dim=1)
        return [p.reshape(len(x), -1, d).transpose(1, 2) for p, (_, d) in zip(pieces, sizes, strict=True)]

    def internal(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The product as blocks: x [E, irreps_in1], y [E, irreps_in2] -> per (l1, L) [E, 2L+1, paths, U]."""
        if ChannelwiseTensorProduct.reference:
            return [self.forward_e3nn(x, y, weight)]  # [E, irreps_out]
        E, U = x.shape[0], self.channels
        x1 = self._channels_last(x, self.sizes_in1)  # per l1 [E, 2l1+1, U]
        if self.mode == "uvu":
            products = [
                torch.bmm((y @ getattr(self, f"coupling_{l1}")).view(E, -1, x_l.shape[1]), x_l)  # [E, K_l1, U]
                for l1, x_l in enumerate(x1)
            ]
        else:
            x2 = torch.cat(self._channels_last(y, self.sizes_in2), dim=1)  # [E, d2, U]
            products = [
                torch.matmul(getattr(self, f"coupling_{l1}"), (x_l[:, :, None] * x2[:, None]).reshape(E, -1, U))
                for l1, x_l in enumerate(x1)
            ]  # outer products [E, (2l1+1) d2, U] -> [E, K_l1, U]
            weight = self.weight
        w = weight.view(-1, len(self.slot_path), U).index_select(1, self.block_path)  # [E or 1, paths, U]
        pieces = [p for l1, product in enumerate(products) for p in torch.split(product, self.rows[l1], dim=1)]
        return [
            piece.view(E, d, s1 - s0, U) * w_b[:, None]
            for (_, _, d, s0, s1), piece, w_b in zip(
                self.blocks, pieces, torch.split(w, self.block_paths, dim=1), strict=True
            )
        ]

    def project(self, h: list[torch.Tensor], linear: o3.Linear) -> torch.Tensor:
        """``linear`` (an o3.Linear from ``irreps_out.simplify()``, no biases) of the blocks h -> [n, linear out].

        The blocks of one output order L (one per l1) are joined and meet their rows of the weights in one matrix
        product: five calls instead of one per block (docs/speed.md: 0.94-0.99 of the network's time).
        """
        if ChannelwiseTensorProduct.reference:
            return linear(h[0])
        if linear.bias.numel():
            raise ValueError("project applies the weights of an o3.Linear without biases.")
        n = h[0].shape[0]
        outputs = []
        for members, W in self._output_weights(linear):
            d = self.blocks[members[0]][2]
            pieces = [h[b].reshape(n, d, -1) for b in members]
            x = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]  # [n, 2L+1, rows of W]
            outputs.append((x @ W).transpose(1, 2).reshape(n, -1))  # [n, U_out (2L+1)]
        return torch.cat(outputs, dim=1)

    def _output_weights(self, linear: o3.Linear) -> list[tuple[list[int], torch.Tensor]]:
        """Per output irrep of ``linear``: the blocks of ``internal``'s output that feed it and the rows of
        ``linear``'s weights they meet, stacked in that order.

        Without autograd (predictions) they are kept until the weights change (their version counter, which every
        in-place update and load_state_dict moves): building them was about 0.8 ms of a water prediction.
        """
        store = self.__dict__.setdefault("_weight_cache", {})
        return kept_while_unchanged(store, id(linear), linear.weight, lambda: self._stack_output_weights(linear))

    def _stack_output_weights(self, linear: o3.Linear) -> list[tuple[list[int], torch.Tensor]]:
        weights = {
            ins.i_in: (ins.i_out, ins.path_weight * W) for _, ins, W in linear.weight_views(yield_instruction=True)
        }
        members: dict[int, list[int]] = {i: [] for i in range(len(linear.irreps_out))}
        rows: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(linear.irreps_out))}
        for b, (_, i, _, s0, s1) in enumerate(self.blocks):
            i_out, W = weights[i]  # [paths_L U, U_out], rows (path, u) from the first slot of L
            first = self.first_slot[i]
            members[i_out].append(b)
            rows[i_out].append(W[(s0 - first) * self.channels : (s1 - first) * self.channels])
        return [(members[i], torch.cat(rows[i]) if len(rows[i]) > 1 else rows[i][0]) for i in members]

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        # x [E, irreps_in1]; y [E, irreps_in2]; weight [E, weight_numel] ("uvu") or None ("uuu") -> [E, irreps_out]
        blocks = self.internal(x, y, weight)
        if ChannelwiseTensorProduct.reference:
            return blocks[0]
        E = x.shape[0]
        by_L = [
            torch.cat([b for (_, i, *_), b in zip(self.blocks, blocks, strict=True) if i == j], dim=2)
            for j in range(len(self.first_slot))
        ]  # per L [E, 2L+1, paths, U], paths in slot order
        return torch.cat([b.permute(0, 2, 3, 1).reshape(E, -1) for b in by_L], dim=1)

    def forward_e3nn(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, y, weight)


@contextmanager
def e3nn_reference():
    """Within this block every ChannelwiseTensorProduct, ``phisnet.linear.Linear`` and ``GatedLinear`` evaluates with
    e3nn's own code: for tests and benchmarks."""
    previous = ChannelwiseTensorProduct.reference
    ChannelwiseTensorProduct.reference = True
    try:
        yield
    finally:
        ChannelwiseTensorProduct.reference = previous
