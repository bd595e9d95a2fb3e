"""phisnet: an open, runnable PhiSNet.

SE(3)-equivariant prediction of Kohn-Sham Hamiltonians and overlap matrices
(Unke et al., NeurIPS 2021), with PySCF as the reference.

Units at every public interface: Hartree for matrices and energies,
Angstrom for lengths.
"""

from phisnet.errors import InputError

__version__ = "0.1.0"

__all__ = ["InputError", "__version__"]
