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

import math

import numpy as np
import torch
from ase.data import chemical_symbols
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from phisnet.baseline import OneElectronBaseline
from phisnet.config import PhiSNetConfig
from phisnet.conventions import to_e3nn_coordinates
from phisnet.errors import InputError
from phisnet.layers import ElementPairRadial, GatedLinear, Interaction, MatrixHead, PairUpdate
from phisnet.layout import OrbitalLayout, block_irreps_and_basis
from phisnet.linear import Linear
from phisnet.tensor_product import ChannelwiseTensorProduct, tensor_product_uuu, tensor_product_uvu, uniform_irreps
from phisnet.torchtools import default_dtype

OVERLAP_RADIAL = 32  # Gaussians over 0..cutoff for the two-centre overlap (PhiSNetConfig.two_center_overlap)


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
        irreps_block = self._orbital_buffers(dtype)
        irreps_x = self._atom_stage()
        self._pair_stage(irreps_x, dtype)
        self._output_stage(irreps_x, irreps_block, dtype)
        self._baseline()
        self.traced = None  # a phisnet.traced.TracedNetworks while Predictor.trace is on

    def _orbital_buffers(self, dtype) -> o3.Irreps:
        """The orbital layout, element lookups, the per-element references and output scales; the block irreps."""
        config = self.config
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

        return irreps_block

    def _atom_stage(self) -> o3.Irreps:
        """Embedding and interaction layers; returns the irreps of the atom features."""
        config = self.config
        self.irreps_sh = o3.Irreps([(1, (l, 1)) for l in range(config.lmax + 1)])
        irreps_x = uniform_irreps(config.channels, config.lmax)
        self.embedding = nn.Embedding(len(config.elements), config.channels)
        self.embed_linear = Linear(o3.Irreps(f"{config.channels}x0e"), irreps_x)
        self.interactions = nn.ModuleList(
            [Interaction(irreps_x, self.irreps_sh, config) for _ in range(config.n_interactions)]
        )
        return irreps_x

    def _pair_stage(self, irreps_x: o3.Irreps, dtype) -> None:
        """Pair features: x_i (x) x_j and x_j (x) Y(r_ij) with radial weights (optional parts as configured)."""
        config = self.config
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
            self.mix = nn.ModuleDict({name: Linear(irreps_x, irreps_x) for name in ("receiver", "sender", "self")})
        self.pair_updates = nn.ModuleList(
            [PairUpdate(irreps_x, self.irreps_sh, config) for _ in range(config.pair_layers - 1)]
        )

    def _output_stage(self, irreps_x: o3.Irreps, irreps_block: o3.Irreps, dtype) -> None:
        """Diagonal features, the matrix heads, the two-centre S part and the radial basis."""
        config = self.config
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

    def _baseline(self) -> None:
        """The one-electron integral baseline (``config.integral_baseline``), else None."""
        config = self.config
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
        With ``traced`` set (``Predictor.trace``), a prediction of one composition without autograd runs the
        network as a recorded graph (``phisnet.traced``).
        """
        dtype = next(self.parameters()).dtype
        recorded = (
            self.traced.outputs(self, positions[0].to(dtype), atomic_numbers[0]) if self._use_trace(positions) else None
        )
        if recorded is not None:
            elements, outputs = [self.element_indices(atomic_numbers[0])], [recorded]
        else:
            graph, outputs = self._network([p.to(dtype) for p in positions], atomic_numbers)
            elements = [group[2] for group in graph["groups"]]
        if self.baseline is not None:
            self._add_baseline(outputs, positions, atomic_numbers, elements, dtype)
        return outputs

    def _use_trace(self, positions: list[torch.Tensor]) -> bool:
        return (
            self.traced is not None
            and len(positions) == 1
            and not torch.is_grad_enabled()
            and not self.training
            and not ChannelwiseTensorProduct.reference
        )

    def _network(self, positions: list[torch.Tensor], atomic_numbers: list[torch.Tensor]) -> tuple[dict, list[dict]]:
        """The graph and, per composition, the network's H (and S unless ``exact_overlap``) without the baseline."""
        dtype = positions[0].dtype
        graph = self._graph(positions, atomic_numbers)
        rbf = self.gaussians(graph["r"], self.centers, self.width) * graph["envelope"]  # [edges, n_radial]
        fine = self.gaussians(graph["r"], self.fine_centers, self.fine_width) if self.config.fine_radial else None
        x = self._node_features(graph, rbf, fine, dtype)
        pair, diag = self._pair_features(x, graph, rbf, fine), self._self_features(x)
        Q = self.Q.to(dtype)
        outputs = [{} for _ in graph["groups"]]
        h_diag, h_off = self.heads["h_diagonal"](diag, Q), self.heads["h_offdiagonal"](pair, Q)  # [nodes|edges, K, K]
        self._assemble(graph, h_diag, h_off, self.h_reference, self.h_scale, outputs, "hamiltonian")
        if self.config.exact_overlap:
            return graph, outputs
        if self.config.two_center_overlap:  # on-site: the reference alone; pairs: two-centre features
            s_diag, s_off = None, self.heads["s_offdiagonal"](self._two_center(graph), Q)
        else:
            s_diag, s_off = self.heads["s_diagonal"](diag, Q), self.heads["s_offdiagonal"](pair, Q)
        self._assemble(graph, s_diag, s_off, self.s_reference, self.s_scale, outputs, "overlap")
        return graph, outputs

    def _node_features(self, graph: dict, rbf, fine, dtype) -> torch.Tensor:
        """Embedding and message passing: [nodes, irreps_x]."""
        x = self.embed_linear(self.embedding(graph["elements"]).to(dtype))
        layer_fine = fine * graph["envelope"] if self.config.fine_radial_interactions else None
        for layer in self.interactions:
            x = layer(x, graph["sh"], rbf, graph["src"], graph["dst"], graph["n_nodes"], graph["norm"], layer_fine)
        return x

    def _pair_features(self, x, graph: dict, rbf, fine) -> torch.Tensor:
        """Features of every ordered atom pair (edge) for the off-diagonal blocks: [edges, irreps_x]."""
        src, dst, sh, envelope = graph["src"], graph["dst"], graph["sh"], graph["envelope"]
        if self.config.pair_mixing:
            receiver, sender = self.mix["receiver"](x), self.mix["sender"](x)
        else:
            receiver = sender = x
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
        pair = self.pair_gate(pair)
        for layer in self.pair_updates:
            pair = layer(pair, sh, rbf)
        return pair

    def _self_features(self, x) -> torch.Tensor:
        """Features of every atom for the on-site blocks: [nodes, irreps_x]."""
        second = self.mix["self"](x) if self.config.pair_mixing else x
        return x + self.self_product.project(self.self_product.internal(x, second), self.self_linear)

    def _add_baseline(self, outputs: list[dict], positions, atomic_numbers, elements: list, dtype) -> None:
        """Add the one-electron baseline to each composition's H; with ``exact_overlap``, S is its integral."""
        for out, pos, numbers, element in zip(outputs, positions, atomic_numbers, elements, strict=True):
            M = self.baseline.integrals(pos, numbers)  # [B, F, nao, nao]
            H0 = self.baseline(M, element)  # [B, nao, nao]
            out["hamiltonian"] = out["hamiltonian"] + H0.to(dtype)
            if self.config.exact_overlap:  # float64 whatever the model's dtype: it is exact
                out["overlap"] = M[:, 0]

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
            samples, report = self._baseline_residual(list(samples))
        for key, reference in (("hamiltonian", self.h_reference), ("overlap", self.s_reference)):
            reference.copy_(self._invariant_mean_blocks(samples, key, reference).to(reference.dtype))
        for key, scale, reference in (
            ("hamiltonian", self.h_scale, self.h_reference),
            ("overlap", self.s_scale, self.s_reference),
        ):
            scale.fill_(self._residual_spread(samples, key, reference))
        return report

    def _baseline_residual(self, samples: list) -> tuple[list, dict]:
        """Fit the baseline; the samples with H minus the baseline, and the fit report with ``mae_uHa``."""
        report = self.baseline.fit(samples, self.element_indices)
        residual = []
        for sample in samples:
            numbers = sample["atomic_numbers"]
            positions = sample["positions"][None].to(self.baseline.onsite.dtype)  # as the network sees them
            H0 = self.baseline.hamiltonian(positions, numbers, self.element_indices(numbers))[0]
            residual.append({**sample, "hamiltonian": sample["hamiltonian"].double() - H0})
        report["mae_uHa"] = float(torch.cat([r["hamiltonian"].reshape(-1) for r in residual]).abs().mean()) * 1e6
        return residual, report

    def _invariant_mean_blocks(self, samples, key: str, reference: torch.Tensor) -> torch.Tensor:
        """Per element, trace(block) / (2l+1) times the identity of its mean diagonal block, for every pair of
        its shells with equal l (float64, [elements, K, K])."""
        slots = self.orbitals.slots
        starts = [self.orbitals.slot_start[s] for s in slots]
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
        return invariant

    def _residual_spread(self, samples, key: str, reference) -> float:
        """The output scale: the standard deviation of what the references leave for the network."""
        residuals = []
        for sample in samples:
            elements = self.element_indices(sample["atomic_numbers"])
            index = [self.orbitals.element_index[e] for e in elements.tolist()]
            per_atom = [reference[e][np.ix_(idx, idx)] for e, idx in zip(elements.tolist(), index, strict=True)]
            residuals.append((sample[key].double() - torch.block_diag(*per_atom).double()).reshape(-1))
        return float(torch.cat(residuals).std())


# ----------------------------------------------------------------------------- checkpoints and prediction


def build_model(config: PhiSNetConfig, dtype: torch.dtype) -> PhiSNet:
    """A freshly initialised PhiSNet built under ``dtype`` as default (e3nn stores its coefficients then)."""
    with default_dtype(dtype):
        return PhiSNet(config)
