"""phisnet.layers: the gated linear map's written-out gate against e3nn's Gate."""

import pytest
import torch
from e3nn import o3

from phisnet.layers import GatedLinear
from phisnet.tensor_product import e3nn_reference
from phisnet.torchtools import default_dtype


@pytest.mark.parametrize("channels, lmax", [(4, 4), (3, 2), (5, 1)])
def test_gate_equals_e3nns_gate_with_gradients(channels, lmax):
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        layer = GatedLinear(o3.Irreps([(channels, (l, 1)) for l in range(lmax + 1)]), channels, lmax)
    x = torch.randn(6, layer.linear.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    with e3nn_reference():
        expected = layer(x)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    assert y.shape == (6, layer.irreps_out.dim) and y.abs().max() > 0.1
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    with e3nn_reference():
        (reference,) = torch.autograd.grad(layer(x).square().sum(), x)
    torch.testing.assert_close(grad, reference, rtol=0, atol=1e-12)
