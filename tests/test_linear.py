"""phisnet.linear: e3nn's o3.Linear evaluated per order, against e3nn's own evaluation."""

import pytest
import torch
from e3nn import o3

from phisnet.linear import Linear
from phisnet.tensor_product import e3nn_reference
from phisnet.torchtools import default_dtype


@pytest.mark.parametrize(
    "irreps_in, irreps_out",
    [
        ("4x0e+4x1e+4x2e+4x3e+4x4e", "4x0e+4x1e+4x2e+4x3e+4x4e"),  # atom features to atom features
        ("4x0e+4x1e+4x2e", "4x0e+12x0e+4x1e+4x2e"),  # to a gate's input: two entries of order 0
        ("4x0e", "4x0e+4x1e+4x2e"),  # the embedding: orders with no input are zeros
        ("4x0e+4x1e+4x2e", "3x0e+2x1e+5x2e+1x3e+4x4e+2x0e"),  # to matrix blocks, unsorted
    ],
)
def test_linear_equals_e3nns_evaluation_with_gradients(irreps_in, irreps_out):
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        linear = Linear(o3.Irreps(irreps_in), o3.Irreps(irreps_out))
    x = torch.randn(7, linear.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    y = linear(x)
    with e3nn_reference():
        expected = linear(x)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    assert y.abs().max() > 0.1
    grads = torch.autograd.grad((y * expected.detach()).sum(), [x, linear.weight])
    with e3nn_reference():
        reference = torch.autograd.grad((linear(x) * expected.detach()).sum(), [x, linear.weight])
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_kept_weights_follow_a_change_of_the_weights():
    torch.manual_seed(1)
    linear = Linear(o3.Irreps("3x0e+3x1e"), o3.Irreps("2x0e+2x1e"))
    x = torch.randn(5, linear.irreps_in.dim)
    with torch.no_grad():
        before = linear(x)
        linear.weight.mul_(2.0)
        after = linear(x)
        with e3nn_reference():
            expected = linear(x)
    torch.testing.assert_close(after, expected)
    torch.testing.assert_close(after, 2 * before)
