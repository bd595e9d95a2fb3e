"""The paper's metrics: MAE of H and S, of occupied orbital energies (eps), and psi.

Units as in Unke et al. (2021), Table 1: H and eps in micro-Hartree (uHa), S in 1e-6
(dimensionless), psi the mean absolute cosine similarity of occupied orbital
coefficients in percent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from phisnet.errors import InputError

MICRO = 1e6


@dataclass
class Metrics:
    """Mean metrics over a set of structures (see module docstring for units)."""

    n_structures: int
    h_mae_uha: float
    s_mae_1e6: float
    eps_mae_uha: float
    psi_percent: float
    energy_mae_mev: float | None = None
    force_mae_mev_a: float | None = None
    n_orthogonalised: int = 0  # structures whose predicted S needed canonical orthogonalisation
    n_unsolvable: int = 0  # structures whose predicted S keeps fewer functions than occupied orbitals
    h_mae_by_block: dict[str, float] = field(default_factory=dict)  # uHa, see block_errors
    subspace: float = 0.0  # orbitals solved in the span of S's eigenvectors above this (observables.solve)

    def to_json(self) -> dict:
        out = {
            "n_structures": self.n_structures,
            "H_MAE_uHa": self.h_mae_uha,
            "S_MAE_1e-6": self.s_mae_1e6,
            "eps_MAE_uHa": self.eps_mae_uha,
            "psi_percent": self.psi_percent,
        }
        out["n_predicted_S_orthogonalised"] = self.n_orthogonalised
        out["n_predicted_S_unsolvable"] = self.n_unsolvable
        out["subspace"] = self.subspace
        if self.energy_mae_mev is not None:
            out["energy_MAE_meV"] = self.energy_mae_mev
            out["force_MAE_meV_per_A"] = self.force_mae_mev_a
        if self.h_mae_by_block:
            out["H_MAE_uHa_by_block"] = self.h_mae_by_block
        return out


def block_errors(error: np.ndarray, numbers, ao_slices, totals: dict | None = None) -> dict[str, tuple[float, int]]:
    """Sum and count of |error| entries of H per kind of atom-pair block, to see where a model's error sits.

    Kinds: ``"O"`` is the on-site block of an oxygen (atom with itself), ``"O-H"`` every block between an
    oxygen and a hydrogen atom, ``"H-H"`` the blocks between two different hydrogen atoms; element pairs are
    named heavier element first. ``ao_slices[i]`` is atom i's AO range (``mol.aoslice_by_atom()[i, 2:]``).
    Adds to ``totals`` (sums over many structures) when given, and returns it.
    """
    from ase.data import chemical_symbols

    totals = {} if totals is None else totals
    for i, (zi, (a0, a1)) in enumerate(zip(numbers, ao_slices, strict=True)):
        for j, (zj, (b0, b1)) in enumerate(zip(numbers, ao_slices, strict=True)):
            heavy, light = (zi, zj) if zi >= zj else (zj, zi)
            kind = chemical_symbols[zi] if i == j else f"{chemical_symbols[heavy]}-{chemical_symbols[light]}"
            block = np.abs(error[a0:a1, b0:b1])
            total, count = totals.get(kind, (0.0, 0))
            totals[kind] = (total + float(block.sum()), count + block.size)
    return totals


def format_block_table(rows: list[tuple[str, Metrics]]) -> str:
    """H MAE (uHa) per kind of atom-pair block: one row per kind, one column per model or dataset."""
    kinds = sorted({k for _, m in rows for k in m.h_mae_by_block}, key=lambda k: ("-" in k, k))
    width = max(12, *(len(name) + 2 for name, _ in rows))
    header = f"{'H MAE [uHa] by block':<22}" + "".join(f"{name:>{width}}" for name, _ in rows)
    lines = [header, "-" * len(header)]
    for kind in kinds:
        cells = (f"{m.h_mae_by_block[kind]:>{width}.1f}" if kind in m.h_mae_by_block else " " * width for _, m in rows)
        lines.append(f"{kind:<22}" + "".join(cells))
    lines.append(
        "X: on-site blocks of element X (an atom with itself); X-Y: blocks between two different atoms of "
        "elements X and Y; mean |error| over their entries."
    )
    return "\n".join(lines)


def orbital_errors(H_pred, S_pred, H_ref, S_ref, n_occupied: int, subspace: float = 0.0) -> tuple[float, float]:
    """MAE of the occupied orbital energies (Hartree) and mean |cos| of their coefficients.

    A predicted S that is not positive definite (possible for a poorly trained model) is
    handled like a near-singular one: ``phisnet.observables.solve`` drops its eigenvalues below
    ``LINDEP_THRESHOLD`` (canonical orthogonalisation) and warns. ``subspace``: the predicted
    orbitals are solved in the span of S's eigenvectors above it (a model's ``subspace``).
    """
    from phisnet.observables import solve

    predicted = solve(H_pred, S_pred, 2 * n_occupied, subspace=subspace)
    eps_p, C_p = predicted.energies, predicted.coefficients
    eps_r, C_r = scipy.linalg.eigh(H_ref, S_ref)
    occ = slice(0, n_occupied)
    eps_mae = float(np.abs(eps_p[occ] - eps_r[occ]).mean())
    a, b = C_p[:, occ], C_r[:, occ]
    cos = np.abs((a * b).sum(0)) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return eps_mae, float(cos.mean())


def model_split(predictor, dataset, split: str = "test", path: str = "the model") -> list[int]:
    """Positions in ``dataset`` of one split (train, val, test, test_ood) recorded in a model's checkpoint.

    Raises InputError when ``dataset`` is not the one the model was trained on (another size or
    other generation settings): its splits would then mix training and test structures. A file that holds one
    split of that dataset, rebuilt (``phisnet.split_rebuild``), serves for that split.
    """
    from phisnet.split_rebuild import subset_positions

    info = predictor.info
    rebuilt = subset_positions(dataset, info, split, path)
    if rebuilt is not None:
        return rebuilt
    splits, trained_on = info.splits, info.n_structures
    same_data = trained_on == len(dataset) and info.data_settings == (dataset.metadata.get("settings") or {})
    if not (splits and same_data):
        raise InputError(
            f"{dataset.path} is not the dataset {path} was trained on ({trained_on} structures, "
            f"{info.data_title}); its splits do not apply, use --split all."
        )
    parts = dataset.split_indices(splits["seed"], splits["train"], splits["val"])
    if split not in parts:
        raise InputError(f"{dataset.path} has no held-out molecules, so no {split} split.")
    return parts[split]


def evaluate(
    predictor, dataset, indices=None, progress: bool = False, energies: bool = False, subspace: float | None = None
) -> Metrics:
    """The paper's metrics of a predictor on dataset rows (all rows when indices is None).

    With ``energies``, also the MAE of the energy (meV) and forces (meV/Angstrom) of the
    predicted density against the dataset's DFT values: orbitals of the predicted H with
    the exact overlap, put into PySCF's energy functional and gradient (see
    ``phisnet.observables.energy_and_forces`` for the approximation). The predicted orbitals
    are solved within the model's ``subspace`` (``Predictor.subspace``), or the one given.
    """
    from phisnet.reference import HARTREE_EV

    indices = list(range(len(dataset))) if indices is None else list(indices)
    if not indices:
        raise ValueError("no structures to evaluate")
    subspace = predictor.subspace if subspace is None else float(subspace)
    h_err, s_err, eps_err, psi, e_err, f_err = [], [], [], [], [], []
    by_block: dict[str, tuple[float, int]] = {}
    settings = getattr(dataset, "metadata", {}).get("settings") or {}
    charge, spin = int(settings.get("charge", 0)), int(settings.get("spin", 0))
    n_orthogonalised = n_unsolvable = 0
    for k in tqdm(indices, desc="evaluating", unit="structure", disable=not progress):
        h, s, orbital, energy = _structure_errors(predictor, dataset[k], charge, spin, subspace, energies, by_block)
        h_err.append(h)
        s_err.append(s)
        if orbital is None:
            n_unsolvable += 1  # no orbitals to compare: left out of eps and psi, and counted
        else:
            eps_err.append(orbital[0])
            psi.append(orbital[1])
            n_orthogonalised += orbital[2]
        if energy is not None:
            e_err.append(energy[0])
            if energy[1] is not None:
                f_err.append(energy[1])
    milli_ev = HARTREE_EV * 1000
    return Metrics(
        n_structures=len(indices),
        h_mae_uha=float(np.mean(h_err)) * MICRO,
        s_mae_1e6=float(np.mean(s_err)) * MICRO,
        eps_mae_uha=float(np.mean(eps_err)) * MICRO if eps_err else float("nan"),
        psi_percent=float(np.mean(psi)) * 100 if psi else float("nan"),
        energy_mae_mev=float(np.mean(e_err)) * milli_ev if energies else None,
        force_mae_mev_a=(float(np.mean(f_err)) * milli_ev if f_err else float("nan")) if energies else None,
        n_orthogonalised=n_orthogonalised,
        n_unsolvable=n_unsolvable,
        h_mae_by_block={kind: total / count * MICRO for kind, (total, count) in by_block.items()},
        subspace=subspace,
    )


def _structure_errors(predictor, sample, charge: int, spin: int, subspace: float, energies: bool, by_block: dict):
    """One structure's H MAE, S MAE, orbital comparison (``_orbital_comparison``) and, with ``energies``, its
    energy comparison (``_energy_comparison``; else None); adds its H errors per kind of block to ``by_block``."""
    from phisnet.dataset import sample_atoms
    from phisnet.reference import build_mol

    atoms = sample_atoms(sample)
    pred = predictor.predict(atoms)
    H_ref = sample["hamiltonian"].numpy()
    S_ref = sample["overlap"].numpy()
    mol = build_mol(atoms, basis=predictor.info.basis, charge=charge, spin=spin)
    block_errors(pred.hamiltonian - H_ref, atoms.numbers, mol.aoslice_by_atom()[:, 2:], by_block)
    orbital = _orbital_comparison(pred, H_ref, S_ref, mol.nelectron // 2, subspace)
    energy = _energy_comparison(pred, sample, mol, predictor.info.xc, subspace) if energies else None
    return np.abs(pred.hamiltonian - H_ref).mean(), np.abs(pred.overlap - S_ref).mean(), orbital, energy


def _orbital_comparison(pred, H_ref, S_ref, n_occupied: int, subspace: float) -> tuple[float, float, bool] | None:
    """(eps error, psi, whether the predicted S was orthogonalised), or None when the predicted overlap has no
    room for the occupied orbitals."""
    from phisnet.observables import LINDEP_THRESHOLD

    if int((np.linalg.eigvalsh(pred.overlap) > LINDEP_THRESHOLD).sum()) < n_occupied:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e, c = orbital_errors(pred.hamiltonian, pred.overlap, H_ref, S_ref, n_occupied, subspace)
    return e, c, any("near-singular" in str(w.message) for w in caught)


def _energy_comparison(pred, sample, mol, xc: str, subspace: float) -> tuple[float, float | None]:
    """|E - E_ref| (Hartree) of the predicted density and the forces' MAE (Hartree/Angstrom; None for data
    made with --no-forces)."""
    from phisnet.observables import energy_and_forces, solve

    orbitals = solve(pred.hamiltonian, mol.intor("int1e_ovlp"), mol.nelectron, subspace=subspace)
    has_forces = bool(np.isfinite(sample["forces"].numpy()).all())
    energy, forces = energy_and_forces(mol, orbitals, xc, forces=has_forces)
    force_error = float(np.abs(forces - sample["forces"].numpy()).mean()) if has_forces else None
    return abs(energy - float(sample["energy"])), force_error


def format_table(rows: list[tuple[str, Metrics]]) -> str:
    """A table in the layout of the paper's Table 1."""
    with_energy = any(m.energy_mae_mev is not None for _, m in rows)
    header = f"{'dataset':<20}{'n':>6}{'H [uHa]':>12}{'eps [uHa]':>12}{'psi [%]':>10}{'S [1e-6]':>11}"
    if with_energy:
        header += f"{'E [meV]':>10}{'F [meV/A]':>11}"
    lines = [header, "-" * len(header)]
    for name, m in rows:
        line = (
            f"{name:<20}{m.n_structures:>6}{m.h_mae_uha:>12.1f}{m.eps_mae_uha:>12.1f}{m.psi_percent:>10.2f}"
            f"{m.s_mae_1e6:>11.2f}"
        )
        if m.energy_mae_mev is not None:
            line += f"{m.energy_mae_mev:>10.2f}{m.force_mae_mev_a:>11.2f}"
        lines.append(line)
    return "\n".join(lines + _table_notes(rows, with_energy))


def _table_notes(rows: list[tuple[str, Metrics]], with_energy: bool) -> list[str]:
    """The lines under ``format_table``'s table: flagged structures, the subspace, what E and F mean."""
    lines = []
    notes = (
        (
            "n_orthogonalised",
            "the predicted S was not positive definite for {k} of {n} structures; eps and psi come "
            "from the canonically orthogonalised problem there.",
        ),
        (
            "n_unsolvable",
            "the predicted S of {k} of {n} structures has fewer usable functions than occupied "
            "orbitals; eps and psi average over the other structures.",
        ),
    )
    for field_name, text in notes:
        flagged = [(name, m) for name, m in rows if getattr(m, field_name)]
        if len(flagged) > 3:  # a table of many molecules: one line for all of them
            k = sum(getattr(m, field_name) for _, m in flagged)
            n = sum(m.n_structures for _, m in rows)
            lines.append(f"{len(flagged)} of {len(rows)} rows: " + text.format(k=k, n=n))
        else:
            lines.extend(f"{name}: " + text.format(k=getattr(m, field_name), n=m.n_structures) for name, m in flagged)
    for value in sorted({m.subspace for _, m in rows if m.subspace}):
        lines.append(
            f"eps, psi{', E, F' if with_energy else ''}: predicted orbitals solved in the span of the overlap's "
            f"eigenvectors with eigenvalues above {value:g} (the model's subspace; phisnet subspace)."
        )
    if with_energy:
        lines.append(
            "E, F: energy and forces of the predicted density in PySCF's functional (no SCF) against the data's "
            "own SCF calculation, MAE per structure and per force component."
        )
        if any(m.force_mae_mev_a is not None and np.isnan(m.force_mae_mev_a) for _, m in rows):
            lines.append("F nan: the data has no reference forces (generated with --no-forces).")
    return lines


@dataclass
class EnergyErrors:
    """MAE of energies (meV per structure) and forces (meV/Angstrom per component) against a target."""

    name: str
    n_structures: int
    energy_mae_mev: float
    force_mae_mev_a: float
    energy_mean_error_mev: float  # signed mean: a constant offset shows here
    energy_spread_mev: float  # MAE after removing that mean: the error of energy differences between geometries

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "n_structures": self.n_structures,
            "energy_MAE_meV": self.energy_mae_mev,
            "force_MAE_meV_per_A": self.force_mae_mev_a,
            "energy_mean_error_meV": self.energy_mean_error_mev,
            "energy_MAE_minus_offset_meV": self.energy_spread_mev,
        }


def target_labels(target: str) -> tuple[str, str]:
    """Sample keys of the target energy and forces: ``ccsd_t`` labels or the dataset's reference."""
    if target == "ccsd_t":
        return "ccsd_t_energy", "ccsd_t_forces"
    return "energy", "forces"


def _energy_errors(name, energies, forces, references, reference_forces) -> EnergyErrors:
    from phisnet.reference import HARTREE_EV

    de = (np.asarray(energies) - np.asarray(references)) * HARTREE_EV * 1000
    df = np.concatenate([(f - r).reshape(-1) for f, r in zip(forces, reference_forces, strict=True)])
    return EnergyErrors(
        name=name,
        n_structures=len(energies),
        energy_mae_mev=float(np.abs(de).mean()),
        force_mae_mev_a=float(np.abs(df).mean() * HARTREE_EV * 1000),
        energy_mean_error_mev=float(de.mean()),
        energy_spread_mev=float(np.abs(de - de.mean()).mean()),
    )


def reference_errors(dataset, indices, target: str, name: str) -> EnergyErrors:
    """The dataset's own reference energies and forces (e.g. Hartree-Fock) against the target."""
    e_key, f_key = target_labels(target)
    samples = [dataset[k] for k in indices]
    return _energy_errors(
        name,
        [float(s["energy"]) for s in samples],
        [s["forces"].numpy() for s in samples],
        [float(s[e_key]) for s in samples],
        [s[f_key].numpy() for s in samples],
    )


def end_to_end_errors(predictor, dataset, indices, target: str, name: str, progress: bool = False) -> EnergyErrors:
    """A model's end-to-end energy and forces (``phisnet.end_to_end.end_to_end``) against the target."""
    from phisnet.dataset import sample_atoms
    from phisnet.end_to_end import predict_energy_and_forces

    e_key, f_key = target_labels(target)
    charge = predictor.info.charge
    energies, forces, references, reference_forces = [], [], [], []
    for k in tqdm(list(indices), desc=f"end-to-end {name}", unit="structure", disable=not progress):
        sample = dataset[k]
        energy, force = predict_energy_and_forces(predictor, sample_atoms(sample), charge)
        energies.append(energy)
        forces.append(force)
        references.append(float(sample[e_key]))
        reference_forces.append(sample[f_key].numpy())
    return _energy_errors(name, energies, forces, references, reference_forces)


def format_energy_table(rows: list[EnergyErrors], target_name: str) -> str:
    """End-to-end energy and force errors, one row per method, against one target."""
    header = f"{'method':<36}{'n':>5}{'E MAE [meV]':>13}{'mean dE [meV]':>15}{'E MAE-offset':>14}{'F MAE [meV/A]':>15}"
    lines = [f"energies and forces against {target_name}", header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<36}{r.n_structures:>5}{r.energy_mae_mev:>13.2f}{r.energy_mean_error_mev:>15.2f}"
            f"{r.energy_spread_mev:>14.2f}{r.force_mae_mev_a:>15.2f}"
        )
    lines.append(
        "model rows: E = 1/2 Tr[P (h + F)] + E_nuc of the predicted Fock matrix F, forces -dE/dR (end to end)."
    )
    lines.append("E MAE-offset: MAE after subtracting the mean error (what matters for energy differences), meV.")
    return "\n".join(lines)
