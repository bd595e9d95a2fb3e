"""Prediction from a checkpoint: ``load(path) -> Predictor``, ``predict`` and ``predict_many``, thread choice."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phisnet.checkpoint import ModelInfo, build_from_checkpoint, read_checkpoint
from phisnet.errors import InputError
from phisnet.model import PhiSNet
from phisnet.tensor_product import ChannelwiseTensorProduct
from phisnet.torchtools import torch_threads
from phisnet.traced import RECORD_AFTER, TracedNetworks


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
    busy machine) or a number; predictions restore torch's own setting afterwards. ``trace``: once
    ``phisnet.traced.RECORD_AFTER`` structures of a composition have been predicted (one by one or in batches of one
    size), run its network as a recorded graph (``phisnet.traced``; ``untrace`` switches back).
    """

    def __init__(self, model: PhiSNet, metadata: dict, threads: int | str = "auto", trace: bool = True):
        if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
            raise InputError(f"threads must be 'auto' or a positive whole number, not {threads!r}.")
        self.model = model
        self.metadata = metadata
        self.threads = threads
        if trace:
            self.trace()

    @property
    def info(self) -> ModelInfo:
        """The metadata, typed (``phisnet.checkpoint.ModelInfo``)."""
        return ModelInfo.from_metadata(self.metadata)

    @property
    def elements(self) -> list[int]:
        return list(self.model.config.elements)

    @property
    def subspace(self) -> float:
        """Overlap-eigenvalue threshold the model's orbitals are solved above (metadata ``subspace``; 0: all).

        Chosen on validation data by ``phisnet subspace --write`` (``phisnet.subspace.choose_subspace``).
        """
        return self.info.subspace

    @property
    def traced(self) -> bool:
        return self.model.traced is not None

    def trace(self, record_after: int = RECORD_AFTER) -> Predictor:
        """Predict a composition through a recorded graph once ``record_after`` of its structures have come
        (``phisnet.traced``): the same numbers in 0.78-0.97 of a prediction's time, after a recording of 1.4-2.2 s
        (``benchmarks/fast_paths.py``); returns the predictor."""
        if self.model.traced is None or self.model.traced.record_after != record_after:
            self.model.traced = TracedNetworks(record_after)
        return self

    def untrace(self) -> Predictor:
        """Back to running the network op by op (the switch back from ``trace``)."""
        self.model.traced = None
        return self

    @property
    def compiled(self) -> bool:
        return any("internal" in m.__dict__ for m in self.model.modules() if isinstance(m, ChannelwiseTensorProduct))

    def compile(self) -> Predictor:
        """Compile the tensor products' block arithmetic with ``torch.compile`` (inductor, dynamic shapes); returns
        the predictor. The first prediction after it pays the compilation (7-28 s on this project's CPU, cached
        on disk after), later ones were 3-8 % faster (``benchmarks/compile.py``), with the eager results to float32
        rounding: not worth it by default. The whole network does not compile: dynamo cannot guard on e3nn's
        ``Irreps`` (their ``len`` raises), and the baseline's integrals are PySCF's. Undone by ``uncompile``.
        """
        self.untrace()  # a recorded graph would run the products as they were recorded, not compiled
        for module in self.model.modules():
            if isinstance(module, ChannelwiseTensorProduct) and "internal" not in module.__dict__:
                module.internal = torch.compile(module.internal, dynamic=True)
        return self

    def uncompile(self) -> Predictor:
        """Back to eager evaluation (the switch back from ``compile``)."""
        for module in self.model.modules():
            module.__dict__.pop("internal", None)
        return self

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


def load(
    path: str | Path, dtype: torch.dtype = torch.float32, threads: int | str = "auto", trace: bool = True
) -> Predictor:
    """Load a checkpoint written by ``save_checkpoint`` (safely, ``weights_only=True``); see ``Predictor``."""
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload, dtype)
    return Predictor(model, payload["metadata"], threads, trace)


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
