"""How far to trust one prediction, without running the SCF: its self-consistency and its domain.

An exact prediction of the Kohn-Sham Hamiltonian is self-consistent: build the Fock matrix F[D] of the
density D of its own occupied orbitals (one PySCF Fock build, the cost of one SCF iteration) and the
occupied-virtual block of F[D] in the predicted orbitals, the orbital gradient the SCF converges on,
is zero, and F[D] equals the prediction. How far it is from that says how far the prediction is from
the SCF solution. On the shipped models' test geometries the gradient tracks the true H error over
three orders of magnitude (``benchmarks/trust_calibration.py``).

To keep it cheap the Fock build uses density fitting for J (def2-universal-jkfit) and a coarse
integration grid (level ``GRID_LEVEL``): the residual is a scale, not a digit, and both change it by
far less than the gap between a good and a bad prediction (the calibration measures it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from phisnet.errors import InputError
from phisnet.reference import HARTREE_EV

#: PySCF grid level of the assessment's Fock build (PySCF's default is 3).
GRID_LEVEL = 1
#: Orbital-gradient RMS (Hartree) at and above which a prediction is doubtful, and unreliable.
DOUBTFUL_GRADIENT = 5e-4
UNRELIABLE_GRADIENT = 3e-3
#: RMS of F[D] - H_predicted (Hartree) at and above which a prediction is doubtful whatever its gradient: the
#: occupied orbitals may be right while the matrix (its virtual part) is not. On the 260 calibrated predictions
#: (docs/trust.md) every one under 50 uHa of H error stayed below 150 uHa, and the one over 200 uHa with a small
#: gradient (H2 on the general model, 300 uHa) was at 512.
DOUBTFUL_FOCK = 4e-4
VERDICTS = ("ok", "doubtful", "unreliable")


@dataclass
class Assessment:
    """The self-consistency residual of one prediction and what it says.

    Attributes
    ----------
    verdict : ``"ok"``, ``"doubtful"`` or ``"unreliable"``.
    reason : one line that says why, in a chemist's words.
    gradient_rms, gradient_max : root-mean-square and largest |entry| of the orbital gradient, the
        occupied-virtual block of F[D] in the predicted orbitals, Hartree.
    fock_rms, fock_max : the same of F[D] - H_predicted in the atomic-orbital basis, Hartree.
    step_energy : energy change of one Roothaan step from the prediction, Hartree (second-order
        estimate -2 sum |F_ia|^2 / (e_a - e_i) from the same Fock build; negative).
    outside : reasons the molecule lies outside the model's domain (empty when inside).
    seconds : time of the assessment (the Fock build and the algebra).
    """

    verdict: str
    reason: str
    gradient_rms: float
    gradient_max: float
    fock_rms: float
    fock_max: float
    step_energy: float
    outside: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the verdict, its reason and the residual (and, for a near-solution, one step's energy)."""
        text = f"{self.verdict}: {self.reason} (orbital gradient {self.gradient_rms * 1e6:.3g} uHa RMS"
        if self.verdict != "unreliable":  # the second-order estimate means nothing far from the solution
            text += f"; one SCF step would lower the energy by {-self.step_energy * HARTREE_EV * 1000:.2g} meV"
        return text + ")"


def fock_of_density(mol, xc: str, density_matrix: np.ndarray, grid_level: int = GRID_LEVEL, density_fit=True):
    """PySCF's Fock matrix F[D] (nao, nao; Hartree) at a density matrix, without any SCF iteration."""
    from phisnet.reference import make_mf

    mf = make_mf(mol, xc)
    if density_fit:
        mf = mf.density_fit()
    if hasattr(mf, "grids"):
        mf.grids.level = grid_level
    return mf.get_fock(dm=density_matrix)


def self_consistency(wavefunction, grid_level: int = GRID_LEVEL, density_fit: bool = True) -> dict:
    """The residuals of :class:`Assessment` (Hartree) for a ``PredictedWavefunction``."""
    orbitals = wavefunction.orbitals
    F = fock_of_density(wavefunction.mol, wavefunction.xc, orbitals.density_matrix, grid_level, density_fit)
    C, n_occ = orbitals.coefficients, orbitals.n_occupied
    F_mo = C.T @ F @ C  # [n_mo, n_mo], in the predicted orbitals (orthonormal in the exact S)
    g = F_mo[:n_occ, n_occ:]  # [n_occ, n_vir]
    e = np.diag(F_mo)
    denominators = np.maximum(e[None, n_occ:] - e[:n_occ, None], 1e-3)  # no division by a closed gap
    residual = F - wavefunction.hamiltonian
    return {
        "gradient_rms": float(np.sqrt(np.mean(g**2))) if g.size else 0.0,
        "gradient_max": float(np.abs(g).max()) if g.size else 0.0,
        "fock_rms": float(np.sqrt(np.mean(residual**2))),
        "fock_max": float(np.abs(residual).max()),
        "step_energy": float(-2.0 * np.sum(g**2 / denominators)),
    }


def domain(predictor, atoms) -> list[str]:
    """Why ``atoms`` lies outside what ``predictor`` was trained on: empty when inside.

    A per-molecule model (trained on one of the paper's molecules) knows that molecule only; a model
    trained on a molecule set knows its elements. The geometry itself is judged by the residual.
    """
    from ase.data import chemical_symbols

    from phisnet.molecules import PAPER_MOLECULES, is_paper_molecule

    missing = sorted(set(atoms.get_chemical_symbols()) - {chemical_symbols[z] for z in predictor.elements})
    if missing:
        return [f"the model was not trained on {', '.join(missing)}"]
    if predictor.info.is_set_model:
        return []
    own = predictor.info.data_settings.get("molecule")  # none recorded: no molecule to hold it to
    if own in PAPER_MOLECULES and not is_paper_molecule(atoms, own):
        return [f"{atoms.get_chemical_formula()} is not {own}, the one molecule this model was trained on"]
    return []


def verdict(residuals: dict, outside: list[str], beyond_scf: bool = False) -> tuple[str, str]:
    """The verdict and its reason from the residuals and the domain.

    ``beyond_scf``: the model was fine-tuned to observables of a method beyond its SCF level (CCSD(T)), so its
    Hamiltonian is meant to differ from the self-consistent one and the residual cannot judge it.
    """
    g = residuals["gradient_rms"]
    if outside:
        return "unreliable", outside[0][0].upper() + outside[0][1:] + "."
    if beyond_scf:
        return "doubtful", (
            "This model's Hamiltonian is fitted to CCSD(T) observables, not to an SCF solution, so its "
            "self-consistency cannot vouch for it: rely on its card's test errors, on its own molecule only."
        )
    if g >= UNRELIABLE_GRADIENT:
        return "unreliable", (
            "The predicted wavefunction is far from self-consistent: orbital energies and the gap may be off by "
            "eV; do not use these numbers."
        )
    if g >= DOUBTFUL_GRADIENT:
        return "doubtful", (
            "The predicted wavefunction is not quite self-consistent: expect errors of tenths of an eV; check it "
            "against PySCF."
        )
    if residuals.get("fock_rms", 0.0) >= DOUBTFUL_FOCK:
        return "doubtful", (
            "The occupied orbitals are nearly self-consistent, but the predicted Hamiltonian is far from the Fock "
            "matrix of its own density: trust the occupied orbital energies more than the virtual ones and the "
            "matrix; check it against PySCF."
        )
    return "ok", "The predicted wavefunction is nearly self-consistent, as on the model's own test geometries."


def assess(predictor, atoms, wavefunction=None, charge: int | None = None) -> Assessment:
    """Assess one prediction of ``predictor`` for ``atoms`` (predicted here unless ``wavefunction`` is given).

    Costs one PySCF Fock build beyond the prediction (density-fitted J, grid level ``GRID_LEVEL``).
    A molecule outside the model's domain is ``unreliable`` whatever its residual; an element the model
    does not know raises InputError, as the prediction itself does.
    """
    from phisnet.observables import predict_wavefunction

    t0 = time.perf_counter()
    if wavefunction is None:
        charge = int(atoms.info.get("charge", 0) or 0) if charge is None else charge
        wavefunction = predict_wavefunction(predictor, atoms, charge=charge)
    if wavefunction.orbitals.n_occupied == 0:
        raise InputError("A molecule without electrons has no wavefunction to assess.")
    outside = domain(predictor, atoms)
    residuals = self_consistency(wavefunction)
    word, reason = verdict(residuals, outside, predictor.info.beyond_scf)
    return Assessment(word, reason, **residuals, outside=outside, seconds=time.perf_counter() - t0)
