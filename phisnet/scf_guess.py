"""The predicted wavefunction as an SCF initial guess, against PySCF's standard guesses.

A good guess saves SCF iterations and changes no answer: every run converges to the
same tolerance, so the final energies agree to about that tolerance whichever guess started
them (PySCF's ``conv_tol`` bounds the last cycle's energy change, not the error: on 20-30
atoms spreads of about twice it occur, 2.1e-9 Ha at 1e-9 in the general model's card). The
predicted guess is the density matrix of the orbitals of the predicted Hamiltonian with the
exact overlap, within the model's orbital subspace (``phisnet.observables.predict_wavefunction``),
passed to PySCF as ``mf.kernel(dm0=dm)``. Its wall time includes the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phisnet.observables import predict_wavefunction
from phisnet.reference import run_dft

#: PySCF's standard initial guesses compared by default.
STANDARD_GUESSES = ("minao", "atom", "huckel", "1e")
#: Name of the row for the model's guess.
PREDICTED = "predicted"
#: SCF energy tolerance of every run, Hartree (PySCF's default).
DEFAULT_CONV_TOL = 1e-9


@dataclass
class GuessResult:
    """One SCF run: the guess it started from and how it went.

    Attributes
    ----------
    guess : PySCF guess name, or ``"predicted"``.
    n_iterations : SCF cycles to convergence.
    seconds : wall time of the SCF, plus the prediction for the predicted guess.
    predict_seconds : time of the prediction and its eigenproblem (0 for standard guesses).
    energy : final total energy, Hartree.
    energies : total energy after every SCF cycle, Hartree.
    converged : whether PySCF reached the tolerance within ``max_cycle``.
    """

    guess: str
    n_iterations: int
    seconds: float
    predict_seconds: float
    energy: float
    energies: list[float] = field(default_factory=list)
    converged: bool = True


@dataclass
class GuessComparison:
    """SCF runs of one molecule from several initial guesses, all at tolerance ``conv_tol``."""

    formula: str
    xc: str
    basis: str
    conv_tol: float
    results: list[GuessResult]

    def result(self, guess: str) -> GuessResult:
        for r in self.results:
            if r.guess == guess:
                return r
        raise KeyError(f"no run with guess {guess!r}; have {[r.guess for r in self.results]}")

    @property
    def reference_energy(self) -> float:
        """The lowest converged final energy, Hartree (the common answer of all runs)."""
        return min(r.energy for r in self.results if r.converged)

    @property
    def max_energy_spread(self) -> float:
        """Largest difference between converged final energies, Hartree."""
        energies = [r.energy for r in self.results if r.converged]
        return float(max(energies) - min(energies))

    def energy_errors(self, guess: str) -> np.ndarray:
        """|E after each cycle - reference energy|, Hartree, for convergence plots."""
        return np.abs(np.asarray(self.result(guess).energies) - self.reference_energy)

    def rows(self) -> list[dict]:
        """One dict per guess: iterations, seconds, ratios to minao (when run), final energy."""
        base = next((r for r in self.results if r.guess == "minao"), None)
        rows = []
        for r in self.results:
            row = {
                "guess": r.guess,
                "iterations": r.n_iterations,
                "seconds": r.seconds,
                "prediction seconds": r.predict_seconds,
                "energy / Ha": r.energy,
                "converged": r.converged,
            }
            if base is not None:
                row["iterations / minao"] = r.n_iterations / base.n_iterations
                row["time / minao"] = r.seconds / base.seconds
            rows.append(row)
        return rows

    def format_table(self) -> str:
        """The comparison as a plain-text table."""
        lines = [
            f"{self.formula}, {self.xc}/{self.basis}, SCF tolerance {self.conv_tol:.0e} Ha",
            f"{'guess':<10} {'iterations':>10} {'seconds':>9} {'iter/minao':>10} {'time/minao':>10} "
            f"{'final energy / Ha':>20}",
        ]
        lines.append("-" * len(lines[1]))
        for row in self.rows():
            lines.append(
                f"{row['guess']:<10} {row['iterations']:>10d} {row['seconds']:>9.3f} "
                f"{row.get('iterations / minao', float('nan')):>10.2f} {row.get('time / minao', float('nan')):>10.2f} "
                f"{row['energy / Ha']:>20.10f}{'' if row['converged'] else '  NOT CONVERGED'}"
            )
        lines.append(f"largest difference between final energies: {self.max_energy_spread:.1e} Ha")
        return "\n".join(lines)


def compare(
    atoms,
    predictor,
    guesses: tuple[str, ...] = STANDARD_GUESSES,
    *,
    charge: int = 0,
    conv_tol: float = DEFAULT_CONV_TOL,
    max_cycle: int = 100,
) -> GuessComparison:
    """Run PySCF from the predicted guess and from each standard guess; see the module docstring.

    The level of theory and basis are the model's (``predictor.metadata``). Raises InputError
    for a molecule the model does not accept.
    """
    wavefunction = predict_wavefunction(predictor, atoms, charge=charge)
    settings = dict(
        xc=wavefunction.xc,
        basis=wavefunction.basis,
        charge=charge,
        conv_tol=conv_tol,
        max_cycle=max_cycle,
        forces=False,
    )
    # One discarded single-cycle run first: PySCF's one-time set-up in a fresh process (libxc, grids
    # code paths) would otherwise be charged to whichever guess runs first.
    run_dft(atoms, init_guess="minao", **{**settings, "max_cycle": 1})
    results = []
    ref = run_dft(atoms, dm0=wavefunction.orbitals.density_matrix, **settings)
    results.append(_result(PREDICTED, ref, wavefunction.seconds))
    for guess in guesses:
        results.append(_result(guess, run_dft(atoms, init_guess=guess, **settings), 0.0))
    return GuessComparison(
        formula=atoms.get_chemical_formula(),
        xc=wavefunction.xc,
        basis=wavefunction.basis,
        conv_tol=conv_tol,
        results=results,
    )


def _result(guess: str, ref, predict_seconds: float) -> GuessResult:
    return GuessResult(
        guess=guess,
        n_iterations=ref.n_iterations,
        seconds=ref.seconds + predict_seconds,
        predict_seconds=predict_seconds,
        energy=ref.energy,
        energies=list(ref.energies),
        converged=ref.converged,
    )


@dataclass
class OccupiedVirtualError:
    """A predicted Hamiltonian's error in the basis of the reference orbitals, the part that moves the density.

    In the basis C of the reference orbitals (generalized eigenvectors of H_ref and S), errors
    within the occupied or within the virtual orbitals leave the occupied space as it is; only
    the occupied-virtual block X of C^T (H_pred - H_ref) C moves the density, to first order by
    a rotation X_ia / (eps_a - eps_i) of occupied orbital i towards virtual a. Built once per
    geometry with ``from_matrices``; ``guess(scale)`` gives what-if guesses for any scale.

    Attributes
    ----------
    reference, overlap : the reference H and the exact S, (nao, nao), Hartree.
    energies : reference orbital energies eps, (nao,), Hartree.
    orbitals : reference orbitals C (columns by energy), (nao, nao).
    block : the occupied-virtual block X, (n_occupied, nao - n_occupied), Hartree.
    """

    reference: np.ndarray
    overlap: np.ndarray
    energies: np.ndarray
    orbitals: np.ndarray
    block: np.ndarray

    @classmethod
    def from_matrices(
        cls, hamiltonian: np.ndarray, reference: np.ndarray, overlap: np.ndarray, n_electrons: int
    ) -> OccupiedVirtualError:
        """From the predicted H, reference H and exact S (nao, nao; Hartree) of a closed shell."""
        import scipy.linalg

        energies, C = scipy.linalg.eigh(reference, overlap)
        n_occupied = n_electrons // 2
        block = (C[:, :n_occupied].T @ (hamiltonian - reference) @ C)[:, n_occupied:]
        return cls(reference=reference, overlap=overlap, energies=energies, orbitals=C, block=block)

    @property
    def n_occupied(self) -> int:
        return self.block.shape[0]

    @property
    def rms(self) -> float:
        """Root-mean-square of X, Hartree."""
        return float(np.sqrt(np.mean(self.block**2)))

    @property
    def rotation_rms(self) -> float:
        """Root-mean-square of the first-order rotations X_ia / (eps_a - eps_i), dimensionless."""
        n = self.n_occupied
        gaps = self.energies[None, n:] - self.energies[:n, None]
        return float(np.sqrt(np.mean((self.block / gaps) ** 2)))

    def guess(self, scale: float) -> np.ndarray:
        """Density matrix of H_ref + S C (scale X) C^T S (X and its transpose in the occupied-virtual blocks).

        ``scale=0`` gives the reference density, ``scale=1`` the prediction's density to first
        order in its error. Returns (nao, nao) in PySCF order, for ``mf.kernel(dm0=dm)``.
        """
        import scipy.linalg

        n = self.n_occupied
        X = np.zeros_like(self.reference)
        X[:n, n:] = scale * self.block
        X[n:, :n] = scale * self.block.T
        SC = self.overlap @ self.orbitals
        _, orbitals = scipy.linalg.eigh(self.reference + SC @ X @ SC.T, self.overlap)
        occupied = orbitals[:, :n]
        return 2.0 * occupied @ occupied.T


def scaled_error_guess(
    hamiltonian: np.ndarray, reference: np.ndarray, overlap: np.ndarray, n_electrons: int, scale: float
) -> np.ndarray:
    """Density matrix of a Hamiltonian whose density-moving error is ``scale`` times the prediction's.

    What-if guesses that say how accurate a model must be to save a given number of SCF cycles;
    see ``OccupiedVirtualError`` (build that once per geometry for several scales).

    Parameters
    ----------
    hamiltonian, reference, overlap : predicted H, reference H and the exact S, (nao, nao), Hartree.
    n_electrons : electron count (closed shell).
    scale : factor on the occupied-virtual error, 0 or more.

    Returns
    -------
    density matrix (nao, nao) in PySCF order, for ``mf.kernel(dm0=dm)``.
    """
    return OccupiedVirtualError.from_matrices(hamiltonian, reference, overlap, n_electrons).guess(scale)
