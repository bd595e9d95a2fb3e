import pytest
import torch

from phisnet.torchtools import default_dtype, torch_threads


def test_default_dtype_is_restored_even_after_an_error():
    before = torch.get_default_dtype()
    with default_dtype(torch.float64):
        assert torch.get_default_dtype() == torch.float64
        assert torch.zeros(1).dtype == torch.float64
    assert torch.get_default_dtype() == before
    with pytest.raises(RuntimeError), default_dtype(torch.float64):
        raise RuntimeError("inside")
    assert torch.get_default_dtype() == before


@pytest.mark.parametrize("n", [1, 2, None])
def test_torch_threads_sets_and_restores_the_count(n):
    before = torch.get_num_threads()
    with torch_threads(n):
        assert torch.get_num_threads() == (before if n is None else n)
    assert torch.get_num_threads() == before
