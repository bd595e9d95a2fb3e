"""phisnet: an open, runnable PhiSNet.

SE(3)-equivariant prediction of Kohn-Sham Hamiltonians and overlap matrices
(Unke et al., NeurIPS 2021), with PySCF as the reference.

Units at every public interface: Hartree for matrices and energies,
Angstrom for lengths.
"""

from phisnet.errors import InputError

__version__ = "0.1.0"

# The public API, imported on first use so that `import phisnet` (and the command line's start) does not load torch.
_PUBLIC = {
    "load": "phisnet.predictor",
    "Predictor": "phisnet.predictor",
    "read_molecules": "phisnet.io",
    "predict_wavefunction": "phisnet.observables",
    "solve": "phisnet.observables",
    "assess": "phisnet.trust",
    "PhiSNetConfig": "phisnet.config",
}

__all__ = ["InputError", "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'phisnet' has no attribute {name!r}")
