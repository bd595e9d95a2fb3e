"""A phisnet model as an ASE calculator: energies, forces and dipoles for optimisations and dynamics.

::

    from phisnet.ase import PhiSNetCalculator
    atoms.calc = PhiSNetCalculator("pretrained/water-ccsdt.pt")
    ase.optimize.BFGS(atoms).run(fmax=0.05)

Two routes to the energy, chosen by the model (``route``):

- ``"end-to-end"`` for models trained with energies or forces (a non-zero ``energy_weight`` or
  ``force_weight`` in the checkpoint's ``train_config``: the CCSD(T) water model): E = 1/2 Tr[P (h + F)] +
  E_nuc of the predicted Fock matrix F (``phisnet.end_to_end.end_to_end``), and the forces are exactly
  -dE/dR by autograd, so dynamics conserve this energy.
- ``"variational"`` for the others (``trained_with_energies`` says why): PySCF's energy functional at the
  predicted density and PySCF's analytic SCF gradient with the predicted orbitals
  (``phisnet.observables.energy_and_forces``). These forces are not the derivative of that energy: they
  are what the SCF gradient would be if the predicted orbitals were the SCF solution, so they are as good
  as the prediction is self-consistent, and an energy-conserving integrator will drift with them.

``calc.wavefunction`` is the ``PredictedWavefunction`` of the last geometry (orbitals, density, dipole).
"""

from __future__ import annotations

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes

from phisnet.errors import InputError

ROUTES = ("end-to-end", "variational")


class PhiSNetCalculator(Calculator):
    """ASE calculator of a phisnet model; ``model`` is a checkpoint path or a loaded ``Predictor``.

    ``charge``: total charge (else ``atoms.info["charge"]``, else 0). ``route``: ``"end-to-end"``,
    ``"variational"`` or None for the model's own (see the module docstring). A molecule outside the
    model's domain (an element it does not know, another molecule for a per-molecule model) raises
    InputError at its first calculation; later geometries of the same atoms are not checked again, so a
    molecule may move (a proton transfer, a torsion) without the run stopping.
    """

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, model, charge: int | None = None, route: str | None = None, **kwargs):
        from phisnet.predictor import as_predictor

        super().__init__(**kwargs)
        self.predictor = as_predictor(model)
        own = "end-to-end" if trained_with_energies(self.predictor) else "variational"
        if route not in (None, *ROUTES):
            raise InputError(f"route must be one of {', '.join(ROUTES)}, not {route!r}.")
        self.route = route or own
        self.fixed_charge = charge
        self.wavefunction = None
        self._checked_numbers = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from phisnet.end_to_end import predict_energy_and_forces
        from phisnet.observables import energy_and_forces, predict_wavefunction

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        charge = self.fixed_charge if self.fixed_charge is not None else int(atoms.info.get("charge", 0) or 0)
        self._check_domain(atoms)
        self.wavefunction = predict_wavefunction(self.predictor, atoms, charge=charge)
        if self.route == "end-to-end":
            energy, forces = predict_energy_and_forces(self.predictor, atoms, charge=charge)
        else:
            energy, forces = energy_and_forces(self.wavefunction.mol, self.wavefunction.orbitals, self.wavefunction.xc)
        self.results = {
            "energy": energy * units.Hartree,
            "forces": np.asarray(forces) * units.Hartree,  # Hartree/Angstrom -> eV/Angstrom
            "dipole": self.wavefunction.dipole() * units.Debye,  # Debye -> e Angstrom
        }

    def _check_domain(self, atoms) -> None:
        from phisnet.trust import domain

        numbers = tuple(atoms.numbers)
        if numbers == self._checked_numbers:
            return
        outside = domain(self.predictor, atoms)
        if outside:
            raise InputError(f"PhiSNetCalculator cannot compute {atoms.get_chemical_formula()}: {outside[0]}.")
        self._checked_numbers = numbers


def trained_with_energies(predictor) -> bool:
    """Whether the model was trained on energies or forces, which makes its end-to-end energy the one to use.

    A model trained on matrices alone has an end-to-end energy first order in its error of F (the HF water
    model: 0.49 eV and 7 eV/A off, its card), where PySCF's functional at its density is second order.
    """
    return predictor.info.trained_with_energies
