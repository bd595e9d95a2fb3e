"""A phisnet model as the initial guess of your own PySCF calculation.

::

    import phisnet.pyscf
    mf = pyscf.dft.RKS(mol, xc="pbe")
    mf.kernel(dm0=phisnet.pyscf.guess(mf, "pretrained/ethanol.pt"))

The guess is the density matrix of the predicted orbitals (the predicted Hamiltonian with the exact
overlap, within the model's orbital subspace; ``phisnet.observables.predict_wavefunction``). It changes
no converged answer, only the iterations to reach it (``phisnet.scf_guess`` measures how many it saves).
The molecule must be one the model knows, in the model's basis with spherical functions, closed shell.
"""

from __future__ import annotations

import re

import numpy as np

from phisnet.errors import InputError


def guess(mf_or_mol, model) -> np.ndarray:
    """The predicted density matrix of a PySCF ``Mole`` or SCF object, for ``mf.kernel(dm0=...)``.

    ``model``: a checkpoint path or a loaded ``phisnet.predictor.Predictor``. For an unrestricted SCF object
    the result is the (alpha, beta) pair of half densities. Raises InputError for a model of another basis,
    a molecule outside the model's domain (``phisnet.trust.domain``), Cartesian functions or an open shell.
    """
    from phisnet.observables import predict_wavefunction
    from phisnet.predictor import as_predictor
    from phisnet.trust import domain

    mol = getattr(mf_or_mol, "mol", mf_or_mol)
    if not hasattr(mol, "atom_coords"):
        raise InputError(f"guess needs a PySCF Mole or SCF object, not {type(mf_or_mol).__name__}.")
    predictor = as_predictor(model)
    _check_mol(mol, predictor)
    atoms = mol_to_atoms(mol)
    outside = domain(predictor, atoms)
    if outside:
        raise InputError(f"No guess from this model: {outside[0]}.")
    dm = predict_wavefunction(predictor, atoms, charge=mol.charge).orbitals.density_matrix
    if dm.shape != (mol.nao, mol.nao):  # same basis name and atom order give the same AOs; guard anyway
        raise InputError(f"The model's basis gives {dm.shape[0]} functions, this molecule has {mol.nao}.")
    if _unrestricted(mf_or_mol):
        return np.stack([dm / 2, dm / 2])
    return dm


def mol_to_atoms(mol):
    """``ase.Atoms`` (Angstrom) of a PySCF molecule, its charge in ``info["charge"]``."""
    import ase
    from ase.data import atomic_numbers

    numbers = [atomic_numbers[mol.atom_pure_symbol(i)] for i in range(mol.natm)]
    atoms = ase.Atoms(numbers=numbers, positions=mol.atom_coords(unit="Angstrom"))
    atoms.info["charge"] = int(mol.charge)
    return atoms


def _basis_name(basis) -> str | None:
    """A basis given as one name (or the same name for every element), normalised: def2-SVP -> def2svp."""
    if isinstance(basis, dict):
        names = {_basis_name(value) for value in basis.values()}
        return names.pop() if len(names) == 1 else None
    return re.sub(r"[^a-z0-9]", "", basis.lower()) if isinstance(basis, str) else None


def _check_mol(mol, predictor) -> None:
    wanted = predictor.info.basis
    if _basis_name(mol.basis) != _basis_name(wanted):
        raise InputError(f"This model predicts in the {wanted} basis; the molecule is in {mol.basis!r}.")
    if mol.cart:
        raise InputError("This model predicts spherical basis functions; the molecule has mol.cart = True.")
    if mol.spin != 0:
        raise InputError(f"The models predict closed-shell molecules; this one has spin {mol.spin} (2S).")


def _unrestricted(mf) -> bool:
    from pyscf import scf

    return isinstance(mf, scf.uhf.UHF)
