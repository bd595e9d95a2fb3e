"""PhiSNet: geometry -> Kohn-Sham Hamiltonian and overlap, exactly SE(3)-equivariant.

Following Unke et al. (2021): element embedding; Gaussian radial basis with a smooth
cosine cutoff; equivariant interaction layers of e3nn tensor products between atom
features and spherical harmonics of the bond vectors (features up to L = 4); pair
features for every atom pair; diagonal blocks from atom features and off-diagonal
blocks from pair features. Every shell-pair sub-block (l1, l2) is assembled from
features of order L in |l1-l2|..l1+l2 through Clebsch-Gordan coefficients
(``e3nn.o3.wigner_3j``) and mapped to PySCF order with ``phisnet.conventions``; H and S
are made exactly symmetric.

The network is SE(3) (rotations, not reflections), like the paper: all features carry
e3nn's even parity label and the spherical harmonics are fed in as such.

Shapes: ``B`` molecules in a batch, all with the same ``N`` atoms (one composition per
batch), ``P = N (N - 1)`` ordered atom pairs, ``nao`` orbitals, ``K`` the orbitals of the
padded per-atom shell set (the union of the shells of all elements the model knows).
"""

from __future__ import annotations

import functools
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from phisnet.baseline import OneElectronBaseline
from phisnet.basis import DEFAULT_BASIS, element_shells
from phisnet.conventions import e3nn_to_pyscf_index, to_e3nn_coordinates
from phisnet.errors import InputError
from phisnet.files import atomic_path
from phisnet.torchtools import default_dtype, torch_threads

CHECKPOINT_FORMAT = "phisnet-checkpoint"
CHECKPOINT_VERSION = 1
OVERLAP_RADIAL = 32  # Gaussians over 0..cutoff for the two-centre overlap (PhiSNetConfig.two_center_overlap)


@dataclass
class PhiSNetConfig:
    """Hyperparameters; saved in every checkpoint so the same model can be rebuilt.

    Attributes
    ----------
    elements : atomic numbers the model accepts.
    basis : AO basis of the predicted matrices.
    xc : level of theory of the training data (metadata only).
    channels : multiplicity of every irrep order 0..lmax in atom and pair features.
    lmax : highest irrep order of the features (4 covers d-d shell pairs).
    n_interactions : message-passing layers.
    n_radial : Gaussian radial basis functions.
    cutoff : radial cutoff in Angstrom (all atom pairs get a Hamiltonian block; pairs
        beyond the cutoff exchange no messages).
    radial_hidden : width of the MLPs that turn distances into tensor-product weights.
    pair_mixing : give each side of the channel-wise products (x_i (x) x_j for pairs, x_i (x) x_i
        for diagonal blocks) its own linear map first, so every channel of one atom can meet every
        channel of the other (checkpoints from before the option load with False).
    pair_layers : equivariant layers of the pair stage; each after the first adds
        gate(linear(p_ij (x) Y(r_ij))) with its own radial weights to the pair features p_ij.
    pair_radial_scalars : the radial weights of the pair stage's x_j (x) Y(r_ij) also depend on the
        invariant (L = 0) features of both atoms, so each pair of elements (and environments) gets its own
        radial functions; without it they depend on the distance alone (checkpoints from before the option
        load with False).
    fine_radial : narrow Gaussians (width = spacing) over bonding distances, fine_radial_min..fine_radial_max
        Angstrom, feeding one more MLP of the pair stage's radial weights; 0 = none. The main basis spaces its
        Gaussians cutoff / n_radial apart (0.5 Angstrom by default), coarse against the spread of a bond length.
    fine_radial_min, fine_radial_max : the distances, in Angstrom, that the fine Gaussians cover.
    fine_radial_interactions : the interaction layers' radial weights (which shape the atom features, hence the
        on-site blocks) also get an MLP of the fine Gaussians; needs fine_radial > 0.
    two_center_overlap : predict S the way it is made, as two-centre integrals: the on-site blocks are the
        element's fitted reference (the same for every geometry, as in the basis), and the block of a pair (i, j)
        comes from features w(r_ij, Z_i, Z_j) Y(r_ij) alone (radial weights linear in OVERLAP_RADIAL Gaussians, one
        set per ordered pair of elements, times the spherical harmonics), through the same Clebsch-Gordan head.
        S then no longer draws on the atom and pair features, which serve H alone. Without it S comes from the
        same features as H, like the paper.
    integral_baseline : the network predicts H minus a baseline made of the geometry's exact one-electron integrals
        (``phisnet.baseline``: per kind of shell-pair block a least-squares combination of S, T and V_nuc, fitted to
        the training structures before training); a prediction then computes those integrals with PySCF (milliseconds).
    baseline_screening : exponents zeta (1/Bohr^2) of screened nuclear attractions W_zeta that join S, T and V_nuc in
        the baseline (``phisnet.baseline``: each nucleus minus a Gaussian cloud of its charge, the short-ranged pull of
        a screened atom); empty = none. Needs integral_baseline.
    exact_overlap : S is not predicted but is the exact overlap integral that the baseline computes anyway
        (PySCF's, in the model's basis): the model has no S heads, its S error is rounding, and eps and psi then
        measure H alone. Needs integral_baseline (the paper predicts S because its model calls no quantum-chemistry
        code; a baseline model calls PySCF's one-electron integrals already).
    """

    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])
    basis: str = DEFAULT_BASIS
    xc: str = "pbe"
    channels: int = 16
    lmax: int = 4
    n_interactions: int = 2
    n_radial: int = 16
    cutoff: float = 8.0
    radial_hidden: int = 32
    pair_mixing: bool = True
    pair_layers: int = 1
    pair_radial_scalars: bool = True
    fine_radial: int = 0
    fine_radial_min: float = 0.5
    fine_radial_max: float = 3.0
    fine_radial_interactions: bool = False
    two_center_overlap: bool = False
    integral_baseline: bool = False
    baseline_screening: list[float] = field(default_factory=list)
    exact_overlap: bool = False

    def check(self) -> None:
        """InputError naming the option and its training flag when the options contradict each other."""
        if self.fine_radial_interactions and self.fine_radial < 1:
            raise InputError(
                "fine_radial_interactions needs fine_radial > 0: the Gaussians it feeds the layers "
                "(train.py: give --fine-radial N with --fine-radial-interactions)."
            )
        if self.baseline_screening and not self.integral_baseline:
            raise InputError(
                "baseline_screening needs integral_baseline: the screened attractions join its integrals "
                "(train.py: give --integral-baseline with --baseline-screening)."
            )
        if self.exact_overlap and not self.integral_baseline:
            raise InputError(
                "exact_overlap needs integral_baseline: S comes from the baseline's integrals "
                "(train.py: give --integral-baseline with --exact-overlap)."
            )
        if any(not zeta > 0 for zeta in self.baseline_screening):
            raise InputError(
                f"baseline_screening exponents must be positive (1/Bohr^2; train.py's --baseline-screening), "
                f"got {self.baseline_screening}."
            )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PhiSNetConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ----------------------------------------------------------------------------- orbital bookkeeping


class OrbitalLayout:
    """Padded per-atom shell slots and, per element, which slot orbitals it uses.

    A slot is (l, k): the k-th shell of angular momentum l. The padded set holds, for each
    l, the largest count over the model's elements; slot orbitals are in PySCF component
    order. ``element_index[e]`` lists the slot orbitals element e uses, in PySCF AO order.
    """

    def __init__(self, elements: list[int], basis: str):
        shells = {z: element_shells(chemical_symbols[z], basis) for z in elements}
        lmax_basis = max(max(s) for s in shells.values())
        counts = [max(s.count(l) for s in shells.values()) for l in range(lmax_basis + 1)]
        self.slots: list[tuple[int, int]] = [(l, k) for l in range(lmax_basis + 1) for k in range(counts[l])]
        self.slot_start: dict[tuple[int, int], int] = {}
        p = 0
        for l, k in self.slots:
            self.slot_start[(l, k)] = p
            p += 2 * l + 1
        self.n_orbitals = p
        self.element_index: list[list[int]] = []
        for z in elements:
            seen = [0] * (lmax_basis + 1)
            idx: list[int] = []
            for l in shells[z]:
                start = self.slot_start[(l, seen[l])]
                idx.extend(range(start, start + 2 * l + 1))
                seen[l] += 1
            self.element_index.append(idx)


def block_irreps_and_basis(slots: list[tuple[int, int]]) -> tuple[o3.Irreps, torch.Tensor]:
    """Irreps of a padded K x K block and the Clebsch-Gordan map from them to the block.

    Returns
    -------
    irreps : ``n_L x Le`` for L = 0..2 lmax_basis: one L component for every slot pair (a, b)
        with L in |la-lb|..la+lb.
    Q : tensor of shape (irreps.dim, K, K); ``block = features @ Q.flatten(1)``, in PySCF
        component order, such that block rotates as ``D_a block D_b^T``.
    """
    sizes = [2 * l + 1 for l, _ in slots]
    starts = np.cumsum([0] + sizes)[:-1]
    K = int(sum(sizes))
    entries = []
    for a, (la, _) in enumerate(slots):
        for b, (lb, _) in enumerate(slots):
            for L in range(abs(la - lb), la + lb + 1):
                entries.append((a, b, la, lb, L))
    # Grouped by L, one "n_L x Le" irrep per order: e3nn's Linear then runs one matrix product per L.
    entries.sort(key=lambda entry: entry[-1])
    lmax = entries[-1][-1]
    irreps = o3.Irreps([(sum(1 for e in entries if e[-1] == L), (L, 1)) for L in range(lmax + 1)])
    Q = torch.zeros(irreps.dim, K, K, dtype=torch.float64)
    row = 0
    for a, b, la, lb, L in entries:
        C = o3.wigner_3j(la, lb, L, dtype=torch.float64) * math.sqrt(2 * L + 1)  # (2la+1, 2lb+1, 2L+1)
        ia = list(e3nn_to_pyscf_index(la))
        ib = list(e3nn_to_pyscf_index(lb))
        C = C[ia][:, ib]  # rows/columns from e3nn to PySCF component order
        sa, sb = int(starts[a]), int(starts[b])
        Q[row : row + 2 * L + 1, sa : sa + 2 * la + 1, sb : sb + 2 * lb + 1] = C.permute(2, 0, 1)
        row += 2 * L + 1
    return irreps, Q


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
        T = _one_channel_coupling(len(irreps_in1), len(irreps_in2), lmax, mode)  # [d1, d2, K]
        d2 = T.shape[1]
        # e3nn's output slots (one per path) are sorted by L, then by l1: the paths of one (l1, L) are a run of slots.
        slot_path = torch.empty(len(irreps_out), dtype=torch.long)
        slot_l1 = torch.empty(len(irreps_out), dtype=torch.long)
        for p, ins in enumerate(instructions):  # (i_in1, i_in2, i_out, mode, has_weight): slot i_out, weights p
            slot_path[ins[2]], slot_l1[ins[2]] = p, irreps_in1[ins[0]].ir.l
        self.register_buffer("slot_path", slot_path, persistent=False)
        one_channel = o3.Irreps([(1, ir) for _, ir in irreps_out])
        Ls = sorted({ir.l for _, ir in irreps_out})
        self.first_slot = [min(s for s, (_, ir) in enumerate(irreps_out) if ir.l == L) for L in Ls]
        self.blocks = []  # (l1, index of L, 2L+1, first slot, end slot)
        dtype = torch.get_default_dtype()
        for l1 in range(len(irreps_in1)):
            columns = []  # this l1's k in the internal order (L, M, path)
            for i, L in enumerate(Ls):
                run = [s for s, (_, ir) in enumerate(irreps_out) if ir.l == L and slot_l1[s] == l1]
                if run:
                    if run != list(range(run[0], run[-1] + 1)):  # e3nn sorts slots stably by L: never for these
                        raise ValueError(f"the paths {l1} x . -> {L} are not consecutive in e3nn's output")
                    self.blocks.append((l1, i, 2 * L + 1, run[0], run[-1] + 1))
                    starts = [one_channel.slices()[s].start for s in run]
                    columns += [start + M for M in range(2 * L + 1) for start in starts]
            block = T[l1 * l1 : (l1 + 1) ** 2][:, :, columns]  # [2l1+1, d2, K_l1]
            if per_edge:  # x2 first: A[e, k, i] = sum_j x2[e, j] T[i, j, k]
                block = block.permute(1, 2, 0).reshape(d2, -1)  # [d2, K_l1 (2l1+1)]
            else:  # the outer product first: rows (i, j)
                block = block.reshape(-1, len(columns)).T  # [K_l1, (2l1+1) d2]
            self.register_buffer(f"coupling_{l1}", block.contiguous().to(dtype), persistent=False)
        self.sizes_in1, self.sizes_in2 = (
            [(mul * ir.dim, ir.dim) for mul, ir in irreps] for irreps in (irreps_in1, irreps_in2)
        )
        # Pieces are cut with torch.split, not one slice each: a slice's backward fills a zero tensor of the whole
        # input, a split's backward concatenates once (a training step spent a fifth of its time in slice backward).
        self.rows = [[d * (s1 - s0) for l, _, d, s0, s1 in self.blocks if l == l1] for l1 in range(len(irreps_in1))]
        self.block_paths = [s1 - s0 for *_, s0, s1 in self.blocks]
        block_slots = torch.cat([torch.arange(s0, s1) for *_, s0, s1 in self.blocks])
        self.register_buffer("block_path", slot_path[block_slots], persistent=False)  # weights in block order

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
        """``linear`` (an o3.Linear from ``irreps_out.simplify()``, no biases) of the blocks h -> [n, linear out]."""
        if ChannelwiseTensorProduct.reference:
            return linear(h[0])
        if linear.bias.numel():
            raise ValueError("project applies the weights of an o3.Linear without biases.")
        n = h[0].shape[0]
        outputs = {}
        for (_, _, d, _, _), block, (i_out, W) in zip(self.blocks, h, self._block_weights(linear), strict=True):
            y = block.reshape(n, d, -1) @ W  # [n, 2L+1, U_out]
            outputs[i_out] = outputs[i_out] + y if i_out in outputs else y
        return torch.cat([outputs[i].transpose(1, 2).reshape(n, -1) for i in range(len(linear.irreps_out))], dim=1)

    def _block_weights(self, linear: o3.Linear) -> list[tuple[int, torch.Tensor]]:
        """Per block of ``internal``'s output: (output irrep index, the rows of ``linear``'s weights it meets).

        Without autograd (predictions) the slices are kept until the weights change (their version counter, which
        every in-place update and load_state_dict moves): building them was about 0.8 ms of a water prediction.
        """
        key = (linear.weight._version, linear.weight.data_ptr(), linear.weight.dtype)
        cache = self.__dict__.setdefault("_weight_cache", {})
        if not torch.is_grad_enabled() and cache.get(id(linear), (None,))[0] == key:
            return cache[id(linear)][1]
        weights = {
            ins.i_in: (ins.i_out, ins.path_weight * W) for _, ins, W in linear.weight_views(yield_instruction=True)
        }
        out = []
        for _, i, _, s0, s1 in self.blocks:
            i_out, W = weights[i]  # [paths_L U, U_out], rows (path, u) from the first slot of L
            first = self.first_slot[i]
            out.append((i_out, W[(s0 - first) * self.channels : (s1 - first) * self.channels]))
        if not torch.is_grad_enabled():
            cache[id(linear)] = (key, out)
        return out

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
    """Within this block every ChannelwiseTensorProduct evaluates with e3nn's own code: for tests and benchmarks."""
    previous = ChannelwiseTensorProduct.reference
    ChannelwiseTensorProduct.reference = True
    try:
        yield
    finally:
        ChannelwiseTensorProduct.reference = previous


class GatedLinear(nn.Module):
    """Linear map to (scalars, gates, gated irreps) followed by an e3nn Gate."""

    def __init__(self, irreps_in: o3.Irreps, channels: int, lmax: int):
        super().__init__()
        scalars = o3.Irreps(f"{channels}x0e")
        gated = o3.Irreps([(channels, (l, 1)) for l in range(1, lmax + 1)])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)
        self.linear = o3.Linear(irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.linear(x))


class Interaction(nn.Module):
    """Messages x_j (x) Y(r_ij) weighted by radial MLPs, summed over j, gated, residual."""

    def __init__(self, irreps_x: o3.Irreps, irreps_sh: o3.Irreps, config: PhiSNetConfig):
        super().__init__()
        self.tp = tensor_product_uvu(irreps_x, irreps_sh, config.lmax)
        self.radial = FullyConnectedNet(
            [config.n_radial, config.radial_hidden, self.tp.weight_numel], nn.functional.silu
        )
        if config.fine_radial_interactions:
            self.radial_fine = FullyConnectedNet(
                [config.fine_radial, config.radial_hidden, self.tp.weight_numel], nn.functional.silu
            )
        self.message_linear = o3.Linear(self.tp.irreps_out.simplify(), irreps_x)
        self.self_linear = o3.Linear(irreps_x, irreps_x)
        self.update = GatedLinear(irreps_x, config.channels, config.lmax)
        self.irreps_out = self.update.irreps_out

    def forward(self, x, sh, rbf, src, dst, n_nodes: int, norm: torch.Tensor, fine: torch.Tensor | None = None):
        # x [nodes, irreps_x]; sh [edges, irreps_sh]; rbf [edges, n_radial]; norm [nodes, 1];
        # fine [edges, fine_radial], enveloped, when the layer has radial_fine
        weights = self.radial(rbf)  # [edges, tp.weight_numel]
        if fine is not None:
            weights = weights + self.radial_fine(fine)
        messages = self.tp.internal(x[src], sh, weights)  # blocks [edges, ...] of tp's output
        agg = [m.new_zeros(n_nodes, *m.shape[1:]).index_add_(0, dst, m) for m in messages]  # blocks [nodes, ...]
        h = self.tp.project(agg, self.message_linear) * norm + self.self_linear(x)  # [nodes, irreps_x]
        return x + self.update(h)


class PairUpdate(nn.Module):
    """One more pair layer: p_ij + gate(linear(p_ij (x) Y(r_ij)) + linear(p_ij)), radial weights per pair."""

    def __init__(self, irreps_x: o3.Irreps, irreps_sh: o3.Irreps, config: PhiSNetConfig):
        super().__init__()
        self.tp = tensor_product_uvu(irreps_x, irreps_sh, config.lmax)
        self.radial = FullyConnectedNet(
            [config.n_radial, config.radial_hidden, self.tp.weight_numel], nn.functional.silu
        )
        self.tp_linear = o3.Linear(self.tp.irreps_out.simplify(), irreps_x)
        self.self_linear = o3.Linear(irreps_x, irreps_x)
        self.update = GatedLinear(irreps_x, config.channels, config.lmax)

    def forward(self, pair, sh, rbf):
        # pair [edges, irreps_x]; sh [edges, irreps_sh]; rbf [edges, n_radial]
        h = self.tp.project(self.tp.internal(pair, sh, self.radial(rbf)), self.tp_linear) + self.self_linear(pair)
        return pair + self.update(h)


class ElementPairRadial(nn.Module):
    """Radial functions linear in a radial basis, with weights of their own for each ordered pair of elements.

    Linear, not an MLP: a two-centre overlap integral of Gaussian orbitals is a smooth function of the distance for
    each pair of elements, and a linear model reaches the 1e-6 that S needs in far fewer steps than an MLP.
    """

    def __init__(self, n_elements: int, n_basis: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_elements, n_elements, n_basis, n_out) / math.sqrt(n_basis))

    def forward(self, basis: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        # basis [edges, n_basis]; first, second [edges] element indices -> [edges, n_out]
        n = self.weight.shape[0]
        pair = first * n + second
        out = basis.new_zeros(len(basis), self.weight.shape[-1])
        for p in torch.unique(pair).tolist():  # one matrix product per pair of elements, no per-edge weight copies
            rows = torch.nonzero(pair == p).squeeze(1)
            out = out.index_copy(0, rows, basis[rows] @ self.weight[p // n, p % n])
        return out


class MatrixHead(nn.Module):
    """Features -> padded K x K blocks, through the Clebsch-Gordan basis Q."""

    def __init__(self, irreps_in: o3.Irreps, irreps_block: o3.Irreps):
        super().__init__()
        self.linear = o3.Linear(irreps_in, irreps_block)

    def forward(self, features: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        coefficients = self.linear(features)  # [items, irreps_block]
        K = Q.shape[-1]
        return (coefficients @ Q.reshape(Q.shape[0], -1)).reshape(-1, K, K)  # [items, K, K]


# ----------------------------------------------------------------------------- the network


class PhiSNet(nn.Module):
    """The PhiSNet network. ``forward(positions, atomic_numbers)`` returns H and S.

    Build float64 models under ``torch.set_default_dtype(torch.float64)``: e3nn stores its
    Clebsch-Gordan coefficients in the default dtype at construction.
    """

    def __init__(self, config: PhiSNetConfig):
        super().__init__()
        config.check()
        self.config = config
        dtype = torch.get_default_dtype()
        self.orbitals = OrbitalLayout(config.elements, config.basis)
        lookup = torch.full((119,), -1, dtype=torch.long)
        for i, z in enumerate(config.elements):
            lookup[z] = i
        self.register_buffer("element_lookup", lookup, persistent=False)
        irreps_block, Q = block_irreps_and_basis(self.orbitals.slots)
        self.register_buffer("Q", Q.to(dtype), persistent=False)
        K = self.orbitals.n_orbitals
        mask = torch.zeros(len(config.elements), K, dtype=torch.bool)
        for e, idx in enumerate(self.orbitals.element_index):
            mask[e, idx] = True
        self.register_buffer("element_mask", mask, persistent=False)
        # Per-element invariant references of the diagonal blocks, and output scales, set from data.
        self.register_buffer("h_reference", torch.zeros(len(config.elements), K, K, dtype=dtype))
        self.register_buffer("s_reference", torch.zeros(len(config.elements), K, K, dtype=dtype))
        self.register_buffer("h_scale", torch.ones((), dtype=dtype))
        self.register_buffer("s_scale", torch.ones((), dtype=dtype))

        self.irreps_sh = o3.Irreps([(1, (l, 1)) for l in range(config.lmax + 1)])
        irreps_x = uniform_irreps(config.channels, config.lmax)
        self.embedding = nn.Embedding(len(config.elements), config.channels)
        self.embed_linear = o3.Linear(o3.Irreps(f"{config.channels}x0e"), irreps_x)
        self.interactions = nn.ModuleList(
            [Interaction(irreps_x, self.irreps_sh, config) for _ in range(config.n_interactions)]
        )
        # Pair stage: x_i (x) x_j channel-wise, plus x_j (x) Y(r_ij) with radial weights.
        self.pair_product = tensor_product_uuu(irreps_x, config.lmax)
        self.pair_edge = tensor_product_uvu(irreps_x, self.irreps_sh, config.lmax)
        self.pair_radial = FullyConnectedNet(
            [config.n_radial, config.radial_hidden, self.pair_edge.weight_numel], nn.functional.silu
        )
        if config.pair_radial_scalars:  # radial weights from distance and both atoms' scalar features
            self.pair_radial_scalars = FullyConnectedNet(
                [config.n_radial + 2 * config.channels, config.radial_hidden, self.pair_edge.weight_numel],
                nn.functional.silu,
            )
        if config.fine_radial:  # radial weights from narrow Gaussians over bonding distances
            self.pair_radial_fine = FullyConnectedNet(
                [config.fine_radial, config.radial_hidden, self.pair_edge.weight_numel], nn.functional.silu
            )
            fine = torch.linspace(config.fine_radial_min, config.fine_radial_max, config.fine_radial, dtype=dtype)
            self.register_buffer("fine_centers", fine, persistent=False)
            self.fine_width = (config.fine_radial_max - config.fine_radial_min) / max(config.fine_radial - 1, 1)
        self.pair_linear_a = o3.Linear(self.pair_product.irreps_out.simplify(), irreps_x)
        self.pair_linear_b = o3.Linear(self.pair_edge.irreps_out.simplify(), irreps_x)
        self.pair_gate = GatedLinear(irreps_x, config.channels, config.lmax)
        if config.pair_mixing:  # own linear maps for the receiver, sender and second factor of x_i (x) x_i
            self.mix = nn.ModuleDict({name: o3.Linear(irreps_x, irreps_x) for name in ("receiver", "sender", "self")})
        self.pair_updates = nn.ModuleList(
            [PairUpdate(irreps_x, self.irreps_sh, config) for _ in range(config.pair_layers - 1)]
        )
        # Diagonal stage: x_i plus x_i (x) x_i.
        self.self_product = tensor_product_uuu(irreps_x, config.lmax)
        self.self_linear = o3.Linear(self.self_product.irreps_out.simplify(), irreps_x)
        heads = ("h_diagonal", "h_offdiagonal")
        if not config.exact_overlap:
            heads = (*heads, "s_offdiagonal") if config.two_center_overlap else (*heads, "s_offdiagonal", "s_diagonal")
        self.heads = nn.ModuleDict({name: MatrixHead(irreps_x, irreps_block) for name in heads})
        if config.two_center_overlap and not config.exact_overlap:  # w(r, Z_i, Z_j) per channel and order, Y(r_ij)
            self.overlap_radial = ElementPairRadial(
                len(config.elements), OVERLAP_RADIAL, config.channels * (config.lmax + 1)
            )
            overlap_centers = torch.linspace(0.0, config.cutoff, OVERLAP_RADIAL, dtype=dtype)
            self.register_buffer("overlap_centers", overlap_centers, persistent=False)
        self.register_buffer("centers", torch.linspace(0.0, config.cutoff, config.n_radial), persistent=False)
        self.width = config.cutoff / config.n_radial
        self.baseline = None
        if config.integral_baseline:
            slot, l_of, m_of = [], [], []
            for s, (l, _) in enumerate(self.orbitals.slots):
                slot += [s] * (2 * l + 1)
                l_of += [l] * (2 * l + 1)
                m_of += list(range(2 * l + 1))
            self.baseline = OneElectronBaseline(
                self.orbitals.element_index,
                slot,
                l_of,
                m_of,
                len(self.orbitals.slots),
                config.basis,
                config.baseline_screening,
            )

    def element_indices(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Index of each atom's element in ``config.elements``; InputError naming unknown elements."""
        e = self.element_lookup[atomic_numbers]
        if bool((e < 0).any()):
            unknown = sorted({int(z) for z in atomic_numbers[e < 0]})
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.config.elements)
            raise InputError(f"This model was not trained on {names}; it knows {known}.")
        return e

    def envelope(self, r: torch.Tensor) -> torch.Tensor:
        """Smooth cosine cutoff: 1 at r = 0, 0 with zero slope at the cutoff and beyond; [edges] -> [edges]."""
        cutoff = self.config.cutoff
        return 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0) * (r < cutoff)

    @staticmethod
    def gaussians(r: torch.Tensor, centers: torch.Tensor, width: float) -> torch.Tensor:
        """Gaussian radial functions exp(-((r - c) / width)^2): [edges] -> [edges, len(centers)]."""
        return torch.exp(-(((r[:, None] - centers) / width) ** 2))

    def forward(self, positions, atomic_numbers):
        """Predict H and S.

        Parameters
        ----------
        positions : tensor of shape (B, N, 3) or (N, 3), Angstrom; or a list of such tensors, one per
            composition, to predict molecules of different sizes in one pass through the network.
        atomic_numbers : tensor of shape (N,), the same molecule for the whole batch; or a list of them,
            one per tensor of positions.

        Returns
        -------
        dict with ``hamiltonian`` and ``overlap`` of shape (B, nao, nao) (or (nao, nao) for
        unbatched input), Hartree, PySCF AO order; for lists, a list of such dicts, one per composition,
        always batched: a (N, 3) tensor in the list gives (1, nao, nao).
        """
        if isinstance(positions, (list, tuple)):
            if not isinstance(atomic_numbers, (list, tuple)) or len(atomic_numbers) != len(positions):
                raise ValueError("A list of positions needs a list of atomic numbers of the same length.")
            return self._forward_many([p if p.dim() == 3 else p[None] for p in positions], list(atomic_numbers))
        single = positions.dim() == 2
        out = self._forward_many([positions[None] if single else positions], [atomic_numbers])[0]
        return {key: value[0] for key, value in out.items()} if single else out

    def _graph(self, positions: list[torch.Tensor], atomic_numbers: list[torch.Tensor]) -> dict:
        """One graph over every structure of every composition: positions[g] is (B_g, N_g, 3)."""
        device, dtype = positions[0].device, positions[0].dtype
        groups, src, dst, flat_pos, flat_elements, norms = [], [], [], [], [], []
        n_nodes = n_edges = 0
        for pos, numbers in zip(positions, atomic_numbers, strict=True):
            B, N, _ = pos.shape
            elements = self.element_indices(numbers)  # [N]
            # Ordered pairs i != j within each molecule, flattened over the batch.
            ii, jj = torch.meshgrid(torch.arange(N, device=device), torch.arange(N, device=device), indexing="ij")
            off = ii != jj
            pi, pj = ii[off], jj[off]  # [P]
            offsets = n_nodes + (torch.arange(B, device=device) * N)[:, None]
            src.append((offsets + pj).reshape(-1))  # [B P] sender j
            dst.append((offsets + pi).reshape(-1))  # [B P] receiver i
            flat_pos.append(pos.reshape(B * N, 3))
            flat_elements.append(elements.repeat(B))
            norms.append(torch.full((B * N, 1), 1.0 / math.sqrt(max(N - 1, 1)), dtype=dtype, device=device))
            groups.append((B, N, elements, pi, pj, n_nodes, n_edges))
            n_nodes, n_edges = n_nodes + B * N, n_edges + B * len(pi)
        src, dst, flat_pos = torch.cat(src), torch.cat(dst), torch.cat(flat_pos)
        vec = flat_pos[src] - flat_pos[dst]  # [edges, 3] from i to j
        r = vec.norm(dim=-1)  # [edges]
        sh = o3.spherical_harmonics(
            self.irreps_sh, to_e3nn_coordinates(vec), normalize=True, normalization="component"
        )  # [edges, irreps_sh]
        return {
            "groups": groups,
            "src": src,
            "dst": dst,
            "n_nodes": n_nodes,
            "elements": torch.cat(flat_elements),  # [nodes]
            "norm": torch.cat(norms),  # [nodes, 1]: messages summed over a molecule's N - 1 neighbours
            "r": r,
            "sh": sh,
            "envelope": self.envelope(r)[:, None],  # [edges, 1]
        }

    def _two_center(self, graph: dict) -> torch.Tensor:
        """Pair features w(r_ij, Z_i, Z_j) Y(r_ij) for the two-centre overlap: [edges, irreps_x]."""
        r, sh, elements = graph["r"], graph["sh"], graph["elements"]
        basis = self.gaussians(r, self.overlap_centers, self.config.cutoff / (OVERLAP_RADIAL - 1)) * graph["envelope"]
        w = self.overlap_radial(basis, elements[graph["dst"]], elements[graph["src"]])
        w = w.reshape(-1, self.config.lmax + 1, self.config.channels)
        parts = []  # irreps_x is channels x 0e + channels x 1e + ...: per order, channel-major
        for l in range(self.config.lmax + 1):
            y = sh[:, l * l : (l + 1) * (l + 1)]  # [edges, 2l+1]
            parts.append((w[:, l, :, None] * y[:, None, :]).reshape(len(r), -1))
        return torch.cat(parts, dim=-1)

    def _assemble(self, graph: dict, diag_blocks, off_blocks, reference, scale, outputs: list[dict], name: str):
        """Padded blocks -> symmetric (B, nao, nao) matrices per composition, into outputs[g][name]."""
        K = self.orbitals.n_orbitals
        dtype, device = off_blocks.dtype, off_blocks.device
        for out, (B, N, elements, pi, pj, node0, edge0) in zip(outputs, graph["groups"], strict=True):
            full = torch.zeros(B, N, N, K, K, dtype=dtype, device=device)
            full[:, pi, pj] = off_blocks[edge0 : edge0 + B * len(pi)].reshape(B, -1, K, K) * scale
            idx = torch.arange(N, device=device)
            on_site = reference[elements].to(dtype)
            if diag_blocks is not None:
                on_site = diag_blocks[node0 : node0 + B * N].reshape(B, N, K, K) * scale + on_site
            full[:, idx, idx] = on_site
            full = full.permute(0, 1, 3, 2, 4).reshape(B, N * K, N * K)
            keep = self.element_mask[elements].reshape(-1)  # [N K]
            matrix = full[:, keep][:, :, keep]  # [B, nao, nao]
            out[name] = 0.5 * (matrix + matrix.transpose(1, 2))

    def overlap(self, positions: torch.Tensor, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """S alone, (B, nao, nao), without the atom and pair features; needs ``config.two_center_overlap``."""
        if not self.config.two_center_overlap or self.config.exact_overlap:
            raise ValueError("S without the atom features needs a model with two_center_overlap.")
        graph = self._graph([positions], [atomic_numbers])
        outputs = [{}]
        off = self.heads["s_offdiagonal"](self._two_center(graph), self.Q.to(positions.dtype))
        self._assemble(graph, None, off, self.s_reference, self.s_scale, outputs, "overlap")
        return outputs[0]["overlap"]

    def _forward_many(self, positions: list[torch.Tensor], atomic_numbers: list[torch.Tensor]) -> list[dict]:
        """H and S of every structure of every composition in one pass: positions[g] is (B_g, N_g, 3).

        The network runs in its parameters' dtype; a baseline's integrals are taken at the positions as given
        (float64 positions from a float32 model's Predictor: the integrals, and an exact S, of the geometry itself).
        """
        given = positions
        dtype = next(self.parameters()).dtype
        positions = [p.to(dtype) for p in positions]
        graph = self._graph(positions, atomic_numbers)
        src, dst, n_nodes, sh, envelope = graph["src"], graph["dst"], graph["n_nodes"], graph["sh"], graph["envelope"]
        r = graph["r"]
        rbf = self.gaussians(r, self.centers, self.width) * envelope  # [edges, n_radial]
        fine = None
        if self.config.fine_radial:
            fine = self.gaussians(r, self.fine_centers, self.fine_width)  # [edges, fine_radial]

        x = self.embed_linear(self.embedding(graph["elements"]).to(dtype))  # [nodes, irreps_x]
        layer_fine = fine * envelope if self.config.fine_radial_interactions else None
        for layer in self.interactions:
            x = layer(x, sh, rbf, src, dst, n_nodes, graph["norm"], layer_fine)

        if self.config.pair_mixing:
            receiver, sender, second = (self.mix[name](x) for name in ("receiver", "sender", "self"))
        else:
            receiver = sender = second = x
        weights = self.pair_radial(rbf)  # [edges, pair_edge.weight_numel]
        if self.config.pair_radial_scalars:  # the scalars lead x's irreps: channels x 0e come first
            scalars = x[:, : self.config.channels]
            both = torch.cat([rbf, scalars[dst], scalars[src]], dim=-1)
            weights = weights + self.pair_radial_scalars(both) * envelope
        if self.config.fine_radial:
            weights = weights + self.pair_radial_fine(fine) * envelope
        pair = self.pair_product.project(
            self.pair_product.internal(receiver[dst], sender[src]), self.pair_linear_a
        ) + self.pair_edge.project(self.pair_edge.internal(sender[src], sh, weights), self.pair_linear_b)
        pair = self.pair_gate(pair)  # [edges, irreps_x]
        for layer in self.pair_updates:
            pair = layer(pair, sh, rbf)
        diag = x + self.self_product.project(
            self.self_product.internal(x, second), self.self_linear
        )  # [nodes, irreps_x]

        Q = self.Q.to(dtype)
        outputs = [{} for _ in graph["groups"]]
        h_diag, h_off = self.heads["h_diagonal"](diag, Q), self.heads["h_offdiagonal"](pair, Q)  # [nodes|edges, K, K]
        self._assemble(graph, h_diag, h_off, self.h_reference, self.h_scale, outputs, "hamiltonian")
        if self.baseline is not None:
            for out, pos, numbers, group in zip(outputs, given, atomic_numbers, graph["groups"], strict=True):
                M = self.baseline.integrals(pos, numbers)  # [B, F, nao, nao]
                H0 = self.baseline(M, group[2])  # [B, nao, nao]; group[2]: element indices
                out["hamiltonian"] = out["hamiltonian"] + H0.to(dtype)
                if self.config.exact_overlap:  # float64 whatever the model's dtype: it is exact
                    out["overlap"] = M[:, 0]
        if self.config.exact_overlap:
            return outputs
        if self.config.two_center_overlap:  # on-site: the reference alone; pairs: two-centre features
            s_diag, s_off = None, self.heads["s_offdiagonal"](self._two_center(graph), Q)
        else:
            s_diag, s_off = self.heads["s_diagonal"](diag, Q), self.heads["s_offdiagonal"](pair, Q)
        self._assemble(graph, s_diag, s_off, self.s_reference, self.s_scale, outputs, "overlap")
        return outputs

    # ------------------------------------------------------------------------- data-derived constants

    def diagonal_blocks(self, matrix: torch.Tensor, atomic_numbers: torch.Tensor) -> list[torch.Tensor]:
        """Per-atom diagonal blocks of a (nao, nao) matrix, padded to K x K slot layout."""
        elements = self.element_indices(atomic_numbers)
        K = self.orbitals.n_orbitals
        out, p = [], 0
        for e in elements.tolist():
            idx = self.orbitals.element_index[e]
            n = len(idx)
            block = torch.zeros(K, K, dtype=matrix.dtype)
            block[np.ix_(idx, idx)] = matrix[p : p + n, p : p + n]
            out.append(block)
            p += n
        return out

    @torch.no_grad()
    def zero_hamiltonian_heads(self) -> None:
        """Make the network's H exactly zero (the on-site references, and a baseline, remain): heads' weights to 0."""
        for name in ("h_diagonal", "h_offdiagonal"):
            self.heads[name].linear.weight.zero_()

    @torch.no_grad()
    def fit_references(self, samples) -> dict | None:
        """Set per-element invariant diagonal references and output scales from training samples.

        The reference of element e is, for every pair of its shells with equal l, the mean
        of ``trace(block) / (2l+1)`` times the identity: the rotation-invariant part of its
        mean diagonal block, so adding it keeps the model exactly equivariant. With
        ``config.integral_baseline`` the baseline is fitted first and the references and scales
        are those of what it leaves; returns its fit report (``OneElectronBaseline.fit``) then,
        with ``mae_uHa``, the MAE of H over all entries of the samples left by the baseline alone.
        """
        report = None
        if self.baseline is not None:
            samples = list(samples)
            report = self.baseline.fit(samples, self.element_indices)
            residual = []
            for sample in samples:
                numbers = sample["atomic_numbers"]
                positions = sample["positions"][None].to(self.baseline.onsite.dtype)  # as the network sees them
                H0 = self.baseline.hamiltonian(positions, numbers, self.element_indices(numbers))[0]
                residual.append({**sample, "hamiltonian": sample["hamiltonian"].double() - H0})
            entries = torch.cat([r["hamiltonian"].reshape(-1) for r in residual])
            report["mae_uHa"] = float(entries.abs().mean()) * 1e6
            samples = residual
        slots = self.orbitals.slots
        starts = [self.orbitals.slot_start[s] for s in slots]
        for key, reference in (("hamiltonian", self.h_reference), ("overlap", self.s_reference)):
            sums = torch.zeros_like(reference, dtype=torch.float64)
            counts = torch.zeros(reference.shape[0], dtype=torch.float64)
            for sample in samples:
                elements = self.element_indices(sample["atomic_numbers"])
                for e, block in zip(
                    elements.tolist(), self.diagonal_blocks(sample[key], sample["atomic_numbers"]), strict=True
                ):
                    sums[e] += block.double()
                    counts[e] += 1
            mean = sums / counts.clamp(min=1)[:, None, None]
            invariant = torch.zeros_like(mean)
            for a, (la, _) in enumerate(slots):
                for b, (lb, _) in enumerate(slots):
                    if la != lb:
                        continue
                    n = 2 * la + 1
                    sa, sb = starts[a], starts[b]
                    trace = torch.diagonal(mean[:, sa : sa + n, sb : sb + n], dim1=1, dim2=2).sum(-1) / n
                    invariant[:, sa : sa + n, sb : sb + n] = trace[:, None, None] * torch.eye(n, dtype=mean.dtype)
            reference.copy_(invariant.to(reference.dtype))
        # Output scales: the spread of what is left for the network.
        for key, scale, reference in (
            ("hamiltonian", self.h_scale, self.h_reference),
            ("overlap", self.s_scale, self.s_reference),
        ):
            residuals = []
            for sample in samples:
                elements = self.element_indices(sample["atomic_numbers"])
                target = sample[key].double()
                per_atom = []
                for e in elements.tolist():
                    idx = self.orbitals.element_index[e]
                    per_atom.append(reference[e][np.ix_(idx, idx)])
                ref = torch.block_diag(*per_atom).double()
                residuals.append((target - ref).reshape(-1))
            scale.fill_(float(torch.cat(residuals).std()))
        return report


# ----------------------------------------------------------------------------- checkpoints and prediction


def _new_model(config: PhiSNetConfig, dtype: torch.dtype) -> PhiSNet:
    """A freshly initialised PhiSNet built under ``dtype`` as default (e3nn stores its coefficients then)."""
    with default_dtype(dtype):
        return PhiSNet(config)


#: The modules that each optional part of PhiSNetConfig adds, by option name (what with_options can add): the last
#: component of their names (the interaction layers' radial_fine sits once in every layer).
OPTIONAL_PARTS = {
    "pair_mixing": "mix",
    "pair_radial_scalars": "pair_radial_scalars",
    "fine_radial": "pair_radial_fine",
    "fine_radial_interactions": "radial_fine",
    "two_center_overlap": "overlap_radial",
}


def optional_modules(model: PhiSNet, option: str) -> dict[str, nn.Module]:
    """The modules of ``model`` that the optional part ``option`` (a key of OPTIONAL_PARTS) adds, by name."""
    return {name: m for name, m in model.named_modules() if name.split(".")[-1] == OPTIONAL_PARTS[option]}


def with_options(
    model: PhiSNet,
    pair_mixing: bool = False,
    pair_radial_scalars: bool = False,
    fine_radial: int = 0,
    fine_radial_interactions: bool = False,
    two_center_overlap: bool = False,
    add_interactions: int = 0,
    exact_overlap: bool = False,
) -> PhiSNet:
    """The same function with the named parts added where the model lacks them (for fine-tuning an older model).

    Pair-mixing maps start as the identity; the scalar-dependent pair radial MLP and the MLPs of ``fine_radial``
    narrow Gaussians (see PhiSNetConfig; in the pair stage, and with ``fine_radial_interactions`` in every
    interaction layer) start with a zero output layer, so they add nothing until training moves them.
    ``add_interactions`` appends that many interaction layers after the last one; each starts as the identity (the
    linear map into its gate is zero, so its residual update is zero) and learns once that map moves.

    ``two_center_overlap`` is the exception: it replaces how S is made, so the S head and its new MLP start
    untrained (fit them with ``phisnet.training.fit_overlap``); H stays exactly the same function.
    ``exact_overlap`` (a model with an integral baseline) drops the S heads: S becomes the baseline's exact overlap
    integral, H stays exactly the same function.
    """
    add = {
        "pair_mixing": pair_mixing and not model.config.pair_mixing,
        "pair_radial_scalars": pair_radial_scalars and not model.config.pair_radial_scalars,
        "fine_radial": fine_radial > 0 and not model.config.fine_radial,
        "fine_radial_interactions": fine_radial_interactions and not model.config.fine_radial_interactions,
        "two_center_overlap": two_center_overlap and not model.config.two_center_overlap,
        "exact_overlap": exact_overlap and not model.config.exact_overlap,
    }
    if add["exact_overlap"] and not model.config.integral_baseline:
        raise ValueError("exact_overlap takes S from the one-electron baseline's integrals; this model has none.")
    if add["exact_overlap"] and add["two_center_overlap"]:
        raise ValueError("exact_overlap replaces the predicted S: do not also add two_center_overlap.")
    if add_interactions < 0:
        raise ValueError(f"add_interactions must be 0 or more, not {add_interactions}.")
    if not any(add.values()) and not add_interactions:
        return model
    if add["fine_radial_interactions"] and not (model.config.fine_radial or add["fine_radial"]):
        raise ValueError("fine_radial_interactions needs fine radial Gaussians: give fine_radial as well.")
    dtype = next(model.parameters()).dtype
    options = {name: True for name, wanted in add.items() if wanted}
    if add["fine_radial"]:
        options["fine_radial"] = fine_radial
    old_layers = model.config.n_interactions
    options["n_interactions"] = old_layers + add_interactions
    upgraded = _new_model(PhiSNetConfig.from_json({**model.config.to_json(), **options}), dtype)
    state = model.state_dict()
    if add["two_center_overlap"] or add["exact_overlap"]:  # S from a new head, or from the integrals
        dropped = ("heads.s_", "overlap_radial.") if add["exact_overlap"] else ("heads.s_",)
        state = {key: value for key, value in state.items() if not key.startswith(dropped)}
    missing, unexpected = upgraded.load_state_dict(state, strict=False)
    new_prefixes = (
        tuple(
            f"{name}."
            for option, wanted in add.items()
            if wanted and option in OPTIONAL_PARTS
            for name in optional_modules(upgraded, option)
        )
        + (("heads.s_offdiagonal.",) if add["two_center_overlap"] else ())
        + tuple(f"interactions.{i}." for i in range(old_layers, options["n_interactions"]))
    )
    assert not unexpected and all(key.startswith(new_prefixes) for key in missing), (missing, unexpected)
    with torch.no_grad():
        if add["pair_mixing"]:
            for linear in upgraded.mix.values():
                weights = []
                for ins in linear.instructions:  # e3nn scales each path by path_weight: the identity is I / path_weight
                    weights.append(torch.eye(ins.path_shape[0], dtype=dtype).reshape(-1) / ins.path_weight)
                linear.weight.copy_(torch.cat(weights))
        for option in ("pair_radial_scalars", "fine_radial", "fine_radial_interactions"):  # zero output layer: adds 0
            if add[option]:
                for mlp in optional_modules(upgraded, option).values():
                    list(mlp.children())[-1].weight.zero_()
        for layer in upgraded.interactions[old_layers:]:  # gate(0) = 0: x + 0, the identity
            layer.update.linear.weight.zero_()
    return upgraded.to(next(model.parameters()).device).train(model.training)


def _widened_index(old_size: int, new_size: int, channels: int) -> torch.Tensor:
    """For each index of a widened axis, the index of the old axis it copies.

    Channel-structured axes hold runs of ``channels`` (one per path, order or gate group); widened k-fold each run
    holds k * channels, and its entry m copies entry m mod channels of the old run. An axis that did not grow (the
    spherical harmonics, the matrix blocks, radial hidden units) maps to itself.
    """
    if new_size == old_size:
        return torch.arange(new_size)
    k = new_size // old_size
    if new_size != k * old_size or old_size % channels:
        raise ValueError(f"an axis of {old_size} entries cannot widen to {new_size} ({channels} channels).")
    m = torch.arange(new_size)
    return (m // (k * channels)) * channels + m % channels


def _spread(old: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, scale: float, noise: float, generator):
    """old[rows][:, cols] * scale / (copies of its row), plus noise that sums to zero over the copies of each row.

    Copies of an input row see equal inputs, so splitting a weight among them, and any noise that cancels among
    them, leaves every output the same; the noise only makes the copies differ so that training can pull them apart.
    """
    copies = torch.bincount(rows, minlength=old.shape[0]).to(old.dtype)
    new = old[rows][:, cols] * (scale / copies[rows])[:, None]
    if noise > 0 and bool((copies > 1).any()):
        eps = torch.randn(new.shape, generator=generator, dtype=old.dtype) * noise * float(old.std())
        mean = torch.zeros(old.shape[0], new.shape[1], dtype=old.dtype).index_add_(0, rows, eps) / copies[:, None]
        new = new + eps - mean[rows]
    return new


def widened(model: PhiSNet, channels: int, noise: float = 0.1, seed: int = 0) -> PhiSNet:
    """The same function with ``channels`` channels per order (a multiple of the model's; for fine-tuning).

    Every channel of the old model becomes k copies (k = channels / old channels): feature copies are equal, a
    layer's weights from a feature are split among its copies (scaled for e3nn's 1/sqrt(fan-in) normalisation) and
    its weights to a feature are repeated. Noise of ``noise`` times each weight matrix's spread, summing to zero over
    the copies of every input, makes the copies' weights differ without changing any output (exactly, up to
    rounding), so that training can make the copies learn different things: a long-trained model grows wider
    without starting over (``phisnet upgrade CHECKPOINT --widen-channels N --out NEW.pt``).
    """
    old_channels = model.config.channels
    if channels == old_channels:
        return model
    if channels < old_channels or channels % old_channels:
        raise InputError(
            f"A model of {old_channels} channels widens to a multiple of them "
            f"(e.g. {2 * old_channels}), not {channels}."
        )
    dtype = next(model.parameters()).dtype
    new = _new_model(PhiSNetConfig.from_json({**model.config.to_json(), "channels": channels}), dtype)
    generator = torch.Generator().manual_seed(seed)
    C, done = old_channels, set()

    def index(old_size: int, new_size: int) -> torch.Tensor:
        return _widened_index(old_size, new_size, C)

    with torch.no_grad():
        for name, module in new.named_modules():
            if not name:
                continue
            old = model.get_submodule(name)
            if isinstance(module, o3.Linear):
                views = zip(
                    old.weight_views(yield_instruction=True), module.weight_views(yield_instruction=True), strict=True
                )
                for (_, ins_old, w_old), (_, ins_new, w_new) in views:
                    rows = index(ins_old.path_shape[0], ins_new.path_shape[0])
                    cols = index(ins_old.path_shape[1], ins_new.path_shape[1])
                    w_new.copy_(_spread(w_old, rows, cols, ins_old.path_weight / ins_new.path_weight, noise, generator))
                if module.bias.numel():
                    raise ValueError("widened maps o3.Linear weights without biases.")
            elif isinstance(module, ChannelwiseTensorProduct) and module.internal_weights:
                module.weight.copy_(old.weight[index(len(old.weight), len(module.weight))])  # [paths, channels]
            elif hasattr(module, "h_in") and hasattr(module, "weight"):  # a layer of e3nn's FullyConnectedNet
                w_old = old.weight
                if name.endswith("pair_radial_scalars.layer0"):  # inputs: radial basis, then both atoms' scalars
                    n = model.config.n_radial
                    rows = torch.cat([torch.arange(n), n + index(C, channels), n + C + index(C, channels)])
                else:
                    rows = index(w_old.shape[0], module.weight.shape[0])
                scale = (module.h_in / old.h_in) ** 0.5  # the layer divides by sqrt(its fan-in)
                cols = index(w_old.shape[1], module.weight.shape[1])
                module.weight.copy_(_spread(w_old, rows, cols, scale, noise, generator))
            elif isinstance(module, (nn.Embedding, ElementPairRadial)):
                module.weight.copy_(old.weight[..., index(old.weight.shape[-1], module.weight.shape[-1])])
            else:
                continue
            done.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
        missing = {p for p, _ in new.named_parameters()} - done
        if missing:
            raise ValueError(f"widened does not know how to widen {sorted(missing)}.")
        fitted = ["h_reference", "s_reference", "h_scale", "s_scale"]
        if model.baseline is not None:
            fitted += ["baseline.onsite", "baseline.offsite"]
        for key in fitted:  # fitted from data, no channel axis
            new.get_buffer(key).copy_(model.get_buffer(key))
    return new.to(next(model.parameters()).device).train(model.training)


def save_checkpoint(path: str | Path, model: PhiSNet, metadata: dict, extra: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename).

    Format (a plain dict, loadable with ``torch.load(..., weights_only=True)``):
    ``format`` = "phisnet-checkpoint", ``version`` = 1, ``config`` (PhiSNetConfig as a
    dict), ``state_dict`` (tensors), ``metadata`` (JSON-able: elements, basis, xc, data,
    splits, metrics, ...), and optionally training state under ``training``.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_json(),
        "state_dict": model.state_dict(),
        "metadata": metadata,
    }
    if extra:
        payload.update(extra)
    _write_checkpoint(path, payload)


def _write_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def update_checkpoint_metadata(path: str | Path, changes: dict) -> None:
    """Merge ``changes`` (JSON-able) into a checkpoint's metadata, rewriting the file atomically; weights untouched."""
    payload = read_checkpoint(path)
    payload["metadata"] = {**payload["metadata"], **changes}
    _write_checkpoint(path, payload)


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint dict safely (``weights_only=True``); InputError if not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no checkpoint file {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch raises many types for corrupt or foreign files
        import zipfile

        if not zipfile.is_zipfile(path):
            raise InputError(
                f"{path.name} is not a PyTorch checkpoint file (damaged, cut short, or another kind of file)."
            ) from None
        raise InputError(
            f"{path.name} holds Python objects besides tensors and plain data: phisnet reads checkpoints with "
            "weights_only=True and does not run code a file carries (a phisnet checkpoint never needs it)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path.name} is not a phisnet checkpoint (no '{CHECKPOINT_FORMAT}' format tag).")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"{path.name} has checkpoint version {payload.get('version')}; this phisnet reads {CHECKPOINT_VERSION}."
        )
    for key in ("config", "state_dict", "metadata"):
        if key not in payload:
            raise InputError(f"{path.name} is missing '{key}'.")
    return payload


def build_from_checkpoint(payload: dict, dtype: torch.dtype = torch.float32) -> PhiSNet:
    # Checkpoints written before pair_mixing or pair_radial_scalars existed were built without them.
    defaults = {"pair_mixing": False, "pair_radial_scalars": False}
    model = _new_model(PhiSNetConfig.from_json({**defaults, **payload["config"]}), dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"The checkpoint's weights do not fit its configuration ({str(exc)[:200]}).") from None
    return model.to(dtype).eval()


@dataclass
class Prediction:
    """Predicted matrices (numpy, Hartree, PySCF AO order) and the time the prediction took."""

    hamiltonian: np.ndarray
    overlap: np.ndarray
    seconds: float


#: Molecules up to this many atoms are predicted on one torch thread: a second thread gains little there on an idle
#: machine and costs much on a busy one (``benchmarks/threads.py``: water 0.034 s on two threads, 0.040 s on one;
#: with both cores busy 0.189 s and 0.072 s).
SINGLE_THREAD_ATOMS = 5


def auto_threads(n_atoms: int, cores: int | None = None, load: float | None = None) -> int:
    """torch threads for one prediction of ``n_atoms`` atoms: one for small molecules, else the idle cores.

    Idle cores are ``cores`` (those this process may run on) less the last minute's load average, at
    least one and at most torch's own setting. An OpenMP thread that has to share a busy core makes the
    others wait for it (``benchmarks/threads.py``, both cores busy: nonan-1-ol, 30 atoms, 1.08 s on two
    threads and 0.81 s on one). The load includes this process's own recent work, so a process that has
    just been busy leans to fewer threads; on an idle machine that costs at most about 1.5x (nonan-1-ol
    0.27 s on two threads, 0.41 s on one).
    """
    limit = torch.get_num_threads()
    if n_atoms <= SINGLE_THREAD_ATOMS or limit <= 1:
        return 1
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not available on this platform: assume the cores are idle
            load = 0.0
    return int(min(limit, max(1, round(cores - load))))


class Predictor:
    """A loaded model ready to predict; ``metadata`` describes what it was trained on.

    ``threads``: torch threads for a prediction, ``"auto"`` (``auto_threads``: one for small molecules or a
    busy machine) or a number; predictions restore torch's own setting afterwards.
    """

    def __init__(self, model: PhiSNet, metadata: dict, threads: int | str = "auto"):
        if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
            raise InputError(f"threads must be 'auto' or a positive whole number, not {threads!r}.")
        self.model = model
        self.metadata = metadata
        self.threads = threads

    @property
    def elements(self) -> list[int]:
        return list(self.model.config.elements)

    @property
    def subspace(self) -> float:
        """Overlap-eigenvalue threshold the model's orbitals are solved above (metadata ``subspace``; 0: all).

        Chosen on validation data by ``phisnet subspace --write`` (``phisnet.metrics.choose_subspace``).
        """
        return float(self.metadata.get("subspace", 0.0))

    def check(self, atoms) -> None:
        """Raise InputError naming any element of ``atoms`` the model was not trained on."""
        self.model.element_indices(torch.as_tensor(atoms.numbers, dtype=torch.long))

    def warm_up(self) -> None:
        """One throw-away prediction: the first call pays torch's and e3nn's one-time set-up."""
        import ase

        symbols = self.elements[:2] if len(self.elements) > 1 else self.elements * 2
        self.predict(ase.Atoms(symbols, positions=[(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)]))

    def threads_for(self, atoms) -> int:
        """torch threads a prediction of ``atoms`` runs on now (``threads``, or ``auto_threads``'s choice)."""
        return auto_threads(len(atoms)) if self.threads == "auto" else self.threads

    def median_seconds(self, atoms, repeat: int = 5) -> float:
        """Median wall time of ``repeat`` predictions: steadier than one call on a busy machine."""
        return float(np.median([self.predict(atoms).seconds for _ in range(max(1, repeat))]))

    @torch.no_grad()
    def predict(self, atoms) -> Prediction:
        """Predict H and S for one ``ase.Atoms`` (positions in Angstrom)."""
        self.check(atoms)
        t0 = time.perf_counter()
        with torch_threads(self.threads_for(atoms)):  # float64 positions: the model casts them for its network
            out = self.model(
                torch.as_tensor(atoms.positions, dtype=torch.float64), torch.as_tensor(atoms.numbers, dtype=torch.long)
            )
        H = out["hamiltonian"].double().numpy()
        S = out["overlap"].double().numpy()
        return Prediction(hamiltonian=H, overlap=S, seconds=time.perf_counter() - t0)

    @torch.no_grad()
    def predict_many(self, frames, batch_size: int = 16, progress: bool = False) -> list[Prediction]:
        """Predict every ``ase.Atoms`` of ``frames`` in batches of up to ``batch_size`` of one composition.

        Frames of the same atoms in the same order (a trajectory) share one pass through the network per
        batch; a frame's ``seconds`` is its share of its batch's time. The results are the ones ``predict``
        gives frame by frame (the same arithmetic; float32 sums may differ in the last digits).
        """
        from tqdm.auto import tqdm

        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise InputError(f"batch_size must be a positive whole number, not {batch_size!r}.")
        frames = list(frames)
        groups: dict[tuple, list[int]] = {}
        for k, atoms in enumerate(frames):
            self.check(atoms)
            groups.setdefault(tuple(int(z) for z in atoms.numbers), []).append(k)
        results: list[Prediction | None] = [None] * len(frames)
        bar = tqdm(total=len(frames), unit="frame", desc="predict", disable=not progress)
        for numbers, members in groups.items():
            z = torch.as_tensor(numbers, dtype=torch.long)
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                positions = torch.as_tensor(np.stack([frames[k].positions for k in chunk]), dtype=torch.float64)
                t0 = time.perf_counter()
                threads = auto_threads(len(chunk) * len(numbers)) if self.threads == "auto" else self.threads
                with torch_threads(threads):  # a batch is as much work as one molecule of all its atoms
                    out = self.model(positions, z)
                H, S = out["hamiltonian"].double().numpy(), out["overlap"].double().numpy()
                share = (time.perf_counter() - t0) / len(chunk)
                for b, k in enumerate(chunk):
                    results[k] = Prediction(hamiltonian=H[b], overlap=S[b], seconds=share)
                bar.update(len(chunk))
        bar.close()
        return results


def load(path: str | Path, dtype: torch.dtype = torch.float32, threads: int | str = "auto") -> Predictor:
    """Load a checkpoint written by ``save_checkpoint`` (safely, ``weights_only=True``); see ``Predictor``."""
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload, dtype)
    return Predictor(model, payload["metadata"], threads)


def as_predictor(model) -> Predictor:
    """``model`` itself if it is a ``Predictor``, else the checkpoint at that path, loaded once per file version."""
    if isinstance(model, (str, Path)):
        path = Path(model).resolve()
        if not path.is_file():
            raise InputError(f"There is no checkpoint file {model}.")
        return _load_cached(str(path), path.stat().st_mtime_ns)
    if not isinstance(model, Predictor):
        raise InputError(f"model must be a checkpoint path or a loaded Predictor, not {type(model).__name__}.")
    return model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> Predictor:  # the modification time in the key: a new file is read
    return load(path)


def list_pretrained(directory: str | Path = "pretrained") -> list[Path]:
    """Checkpoints (``*.pt``) shipped in a directory, sorted with water first, then by name."""
    paths = sorted(Path(directory).glob("*.pt"))
    return sorted(paths, key=lambda p: (p.stem != "water", p.stem))
