"""The network of one composition recorded as a TorchScript graph, for predictions of that molecule again and again.

An eager prediction of a small molecule spends much of its network's time in Python and torch's dispatch (about
2800 torch calls for water, ``docs/speed.md``). For a fixed composition and batch size the network is a fixed
sequence of tensor operations (every atom pair is an edge, no geometry-dependent branches), so ``torch.jit.trace``
records it once and ``torch.jit.freeze`` folds the weights in; later geometries run through the graph without Python
(``benchmarks/fast_paths.py`` prints both side by side). The baseline's PySCF integrals stay outside the graph: they
are numpy, and a trace would keep the recorded geometry's as constants.

``torch.compile`` does not take the whole network (dynamo cannot guard on e3nn's ``Irreps``); tracing does, since it
only records the tensor operations a forward pass runs. TorchScript is deprecated in the pinned torch 2.13 (it
still works; its warnings are silenced here). Its successor ``torch.export`` refuses the network as it stands: the
element check (``PhiSNet.element_indices``) branches on tensor values. ``Predictor.untrace`` switches tracing off.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import torch
from torch import nn

#: Graphs kept per model (each holds a frozen copy of the weights), the most recently used; as many request counts.
KEPT = 4


class _Network(nn.Module):
    """The network part of ``PhiSNet._forward_many`` for one composition: positions (B, N, 3) -> (H, S) or (H,)."""

    def __init__(self, model, atomic_numbers: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("atomic_numbers", atomic_numbers, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, out = self.model._network([positions], [self.atomic_numbers])
        return tuple(out[0][key] for key in ("hamiltonian", "overlap") if key in out[0])


#: Predictions of one composition and batch size before its graph is recorded. Recording and the graph's first
#: optimised run cost 1.4-2.2 s (water to uracil, one thread), and the graph saves 3-22 % of a prediction (2.4 ms of
#: water's 11, 7 ms of ethanol's 61; ``benchmarks/fast_paths.py``): it pays after some hundreds of predictions. At
#: 1000 a run that stops just after the recording is at most about 12 % slower (water), a long MD run faster.
RECORD_AFTER = 1000


class TracedNetworks:
    """Recorded networks of one model, by composition, batch size and dtype, while its weights stay the same.

    A graph is recorded once ``record_after`` structures have come in its key's batches: a molecule predicted a few
    times (the app, a short scan) never pays for the recording, a long MD run or trajectory gets the graph for the
    rest of it.
    """

    def __init__(self, record_after: int = RECORD_AFTER):
        self.record_after = record_after
        self._graphs: OrderedDict[tuple, torch.jit.ScriptModule] = OrderedDict()
        self._requests: OrderedDict[tuple, int] = OrderedDict()
        self._lock = threading.Lock()
        self._weights: tuple[int, list[torch.Tensor]] | None = None  # (id of the model, its state's tensors)

    def outputs(self, model, positions: torch.Tensor, atomic_numbers: torch.Tensor) -> dict | None:
        """The network's H (and S) of positions (B, N, 3), as ``model._network`` computes them; None while fewer than
        ``record_after`` structures of this composition have come in batches of this size (the caller then runs the
        network as it is)."""
        key = (tuple(atomic_numbers.tolist()), tuple(positions.shape), positions.dtype, self._weights_key(model))
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                frames = _keep(self._requests, key, self._requests.get(key, 0) + len(positions))  # a batch: B
                if frames < self.record_after:
                    return None
                graph = _keep(self._graphs, key, _record(model, positions, atomic_numbers))
            self._graphs.move_to_end(key)
        values = graph(positions)
        return dict(zip(("hamiltonian", "overlap"), values, strict=False))

    def _weights_key(self, model) -> tuple:
        """Changes whenever a weight or stored buffer of ``model`` does: in place (an optimiser step,
        load_state_dict) or moved (``model.to``). The list of those tensors is taken once per model (walking the
        model's 400-odd buffers on every call took about 0.9 ms of a 9 ms water prediction); the buffers left out
        are the constants built from the configuration."""
        if self._weights is None or self._weights[0] != id(model):
            self._weights = (id(model), list(model.state_dict(keep_vars=True).values()))
        return tuple((t.data_ptr(), t._version) for t in self._weights[1])

    def __len__(self) -> int:
        return len(self._graphs)

    def __deepcopy__(self, memo) -> TracedNetworks:  # a copied model has weights of its own: it records afresh
        return TracedNetworks(self.record_after)

    def __reduce__(self):
        return TracedNetworks, (self.record_after,)


def _keep(store: OrderedDict, key, value):
    store[key] = value
    while len(store) > KEPT:
        store.popitem(last=False)
    return value


def _record(model, positions: torch.Tensor, atomic_numbers: torch.Tensor) -> torch.jit.ScriptModule:
    network = _Network(model, atomic_numbers).eval()
    with warnings.catch_warnings():  # the tracer's notes on Python ints taken from shapes (fixed per graph here)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # and TorchScript's deprecation (module docstring)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.freeze(torch.jit.trace(network, (positions,), check_trace=False))
