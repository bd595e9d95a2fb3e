"""The layers of PhiSNet: gated linear maps, interactions, pair updates, element-pair radial MLPs, matrix heads."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from phisnet import tensor_product
from phisnet.config import PhiSNetConfig
from phisnet.linear import Linear
from phisnet.tensor_product import tensor_product_uvu


class GatedLinear(nn.Module):
    """Linear map to (scalars, gates, gated irreps) followed by an e3nn Gate.

    The gate is e3nn's activations with the product written out (``_gate``): e3nn's ``Gate`` extracts and multiplies
    through generated tensor-product code, about 0.8 ms a call on a few atoms against 0.1 ms for the same arithmetic
    as three tensor operations (one thread); inside ``e3nn_reference()`` it is e3nn's ``Gate`` itself.
    """

    def __init__(self, irreps_in: o3.Irreps, channels: int, lmax: int):
        super().__init__()
        scalars = o3.Irreps(f"{channels}x0e")
        gated = o3.Irreps([(channels, (l, 1)) for l in range(1, lmax + 1)])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)
        self.linear = Linear(irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.sizes = [scalars.dim, gates.dim, gated.dim]
        # gate k multiplies the k-th irrep of the gated part: each of its 2l+1 components
        spread = torch.repeat_interleave(torch.arange(gated.num_irreps), torch.tensor([2 * l + 1 for l in gated.ls]))
        self.register_buffer("spread", spread, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if tensor_product.ChannelwiseTensorProduct.reference or y.dim() != 2:
            return self.gate(y)
        return self._gate(y)

    def _gate(self, y: torch.Tensor) -> torch.Tensor:
        """e3nn's Gate of y [n, scalars + gates + gated]: act(scalars), then each gated irrep times act(its gate)."""
        scalars, gates, gated = torch.split(y, self.sizes, dim=1)
        gates = self.gate.act_gates(gates)
        return torch.cat([self.gate.act_scalars(scalars), gated * gates.index_select(1, self.spread)], dim=1)


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
        self.self_linear = Linear(irreps_x, irreps_x)
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
        self.self_linear = Linear(irreps_x, irreps_x)
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
        self.linear = Linear(irreps_in, irreps_block)

    def forward(self, features: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        coefficients = self.linear(features)  # [items, irreps_block]
        K = Q.shape[-1]
        return (coefficients @ Q.reshape(Q.shape[0], -1)).reshape(-1, K, K)  # [items, K, K]
