"""e3nn's equivariant linear map, evaluated as one matrix product per order l.

Written here rather than used from e3nn as it is: e3nn's ``o3.Linear`` runs generated code with a narrow, reshape
and tensordot per path and per weight view; on the few atoms of a molecule that per-call cost, not arithmetic, is
its time (13 such maps in a water prediction, about 0.5 ms each). ``Linear`` keeps e3nn's module, its weights and
their layout (checkpoints load unchanged) and evaluates ``x_l @ W_l`` per order instead, with the weight blocks of
one order stacked once and kept until the weights change.
"""

from __future__ import annotations

import torch
from e3nn import o3

from phisnet import tensor_product
from phisnet.torchtools import kept_while_unchanged


class Linear(o3.Linear):
    """``o3.Linear(irreps_in, irreps_out)`` without biases; inside ``e3nn_reference()`` e3nn's own evaluation.

    Forward: x [n, irreps_in] -> [n, irreps_out], e3nn's layout (per irrep entry, [mul, 2l+1]). Per order l, the
    entries of that order are joined along the channels ([n, channels, 2l+1], views of x) and meet one matrix
    [in channels, out channels] in one matrix product over n (2l+1) rows.
    """

    def __init__(self, irreps_in, irreps_out):
        super().__init__(irreps_in, irreps_out, biases=False)
        self.sizes_in = [mul * ir.dim for mul, ir in self.irreps_in]
        self.n_out = len(self.irreps_out)
        #: per order l of the output: (2l+1, its input entries, its output entries, their channels), in irreps order
        self.orders = []
        for l in sorted({ir.l for _, ir in self.irreps_out}):
            inputs = [i for i, (_, ir) in enumerate(self.irreps_in) if ir.l == l]
            outputs = [i for i, (_, ir) in enumerate(self.irreps_out) if ir.l == l]
            self.orders.append((2 * l + 1, inputs, outputs, [self.irreps_out[i].mul for i in outputs]))

    def forward(self, features: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
        if tensor_product.ChannelwiseTensorProduct.reference or weight is not None or features.dim() != 2:
            return super().forward(features, weight, bias)
        n = features.shape[0]
        pieces = torch.split(features, self.sizes_in, dim=1)
        out: list = [None] * self.n_out
        for (d, inputs, outputs, muls), W in zip(self.orders, self._order_weights(features.dtype), strict=True):
            if W is None:  # no input of this order: e3nn gives zeros
                for i, mul in zip(outputs, muls, strict=True):
                    out[i] = features.new_zeros(n, mul * d)
                continue
            xs = [pieces[i].reshape(n, -1, d) for i in inputs]
            x = torch.cat(xs, dim=1) if len(xs) > 1 else xs[0]  # [n, in channels, 2l+1]
            y = (x.transpose(1, 2) @ W).transpose(1, 2)  # [n, out channels, 2l+1]: one GEMM over n (2l+1) rows
            if len(outputs) == 1:
                out[outputs[0]] = y.reshape(n, -1)
            else:
                for i, part in zip(outputs, torch.split(y, muls, dim=1), strict=True):
                    out[i] = part.reshape(n, -1)
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def _order_weights(self, dtype) -> list[torch.Tensor | None]:
        """Per order: [in channels, out channels] of path_weight * W for every instruction, zeros between; without
        autograd (predictions) kept until the weights change."""
        store = self.__dict__.setdefault("_weight_cache", {})
        return kept_while_unchanged(store, "orders", self.weight, lambda: self._stack_order_weights(dtype), dtype)

    def _stack_order_weights(self, dtype) -> list[torch.Tensor | None]:
        views = {(ins.i_in, ins.i_out): ins.path_weight * W for _, ins, W in self.weight_views(yield_instruction=True)}
        matrices = []
        for _, inputs, outputs, _ in self.orders:
            if not inputs:
                matrices.append(None)
                continue
            rows = []
            for i in inputs:
                mul_in = self.irreps_in[i].mul
                blocks = [
                    views[(i, o)] if (i, o) in views else self.weight.new_zeros(mul_in, self.irreps_out[o].mul)
                    for o in outputs
                ]
                rows.append(torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0])
            matrices.append((torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]).to(dtype))
        return matrices
