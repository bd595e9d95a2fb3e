"""``phisnet predict``: orbitals, gap, dipole and charges of a molecule or every frame of a trajectory."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from phisnet.errors import InputError


def add_parser(sub, fmt) -> None:
    pr = sub.add_parser(
        "predict",
        help="orbital energies, gap, dipole and charges of a molecule from a model; molden and cube files",
        description="Predict the Hamiltonian of MOLECULE, solve for its orbitals (with the exact overlap) and "
        "print orbital energies, HOMO-LUMO gap, dipole moment, Mulliken charges and timing. Optionally write "
        "JSON, a molden file and cube files, and compare with a PySCF reference calculation.",
        formatter_class=fmt,
    )
    pr.add_argument("molecule", help="a file (XYZ or any format ASE reads), a SMILES, or a name such as water")
    pr.add_argument("--model", default="pretrained/water.pt", help="checkpoint (.pt)")
    pr.add_argument("--format", help="input format when it cannot be guessed (xyz, smiles, name, any ASE format)")
    pr.add_argument("--frame", type=int, help="only this frame (from 0) of a multi-frame file")
    pr.add_argument("--charge", type=int, default=0, help="total charge")
    pr.add_argument("--reference", action="store_true", help="also run PySCF at the model's level and compare")
    pr.add_argument(
        "--no-assess",
        action="store_true",
        help="skip the reliability check (one PySCF Fock build at the predicted density: how self-consistent the "
        "prediction is, and whether the molecule is one the model knows)",
    )
    pr.add_argument(
        "--json", help="write the results to this JSON file (a .jsonl name: one JSON record per line, one per frame)"
    )
    pr.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="frames of a multi-frame input (a trajectory) predicted together in one pass of the network (on "
        "this CPU 4 was fastest for ethanol: 60 ms a frame against 78 one by one and 95 in batches of 16)",
    )
    pr.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network's tensor products first: up to half a minute once, then 3-8 %% faster a "
        "frame on this project's CPU (benchmarks/compile.py); off by default",
    )
    pr.add_argument("--quiet", action="store_true", help="no progress bar for multi-frame input")
    pr.add_argument("--molden", help="write the predicted orbitals to this molden file")
    pr.add_argument(
        "--cube",
        help="comma-separated cube files to write: homo, lumo, homo-N, lumo+N, an orbital number from 1, "
        "density, difference (predicted minus reference density; needs --reference)",
    )
    pr.add_argument("--cube-dir", default=".", help="folder for the cube files")
    pr.add_argument("--cube-points", type=int, default=80, help="grid points per axis of the cube files")


def run(args: argparse.Namespace) -> int:
    from phisnet.io import read_molecules
    from phisnet.predictor import load
    from phisnet.viz import write_cube, write_molden

    predictor = load(args.model)
    if args.compile:
        predictor.compile()
    frames = read_molecules(args.molecule, args.format, charge=args.charge, basis=predictor.info.basis)
    if args.frame is not None:
        if not 0 <= args.frame < len(frames):
            raise InputError(f"--frame {args.frame}: the input has frames 0 to {len(frames) - 1}.")
        frames = [frames[args.frame]]
    cubes = [c.strip() for c in (args.cube or "").split(",") if c.strip()]
    if (args.molden or cubes) and len(frames) > 1:
        raise InputError(f"the input has {len(frames)} frames; choose one with --frame to write molden or cube files.")
    if "difference" in [c.lower() for c in cubes] and not args.reference:
        raise InputError("the 'difference' cube needs --reference.")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}.")
    predictor.warm_up()
    if len(frames) > 1:
        return predict_frames(args, predictor, frames)
    atoms = frames[0]
    result, wavefunction, reference = predict_one(predictor, atoms, args.reference, not args.no_assess)
    print(format_prediction(result, args.model))
    if args.molden:
        print(f"wrote {write_molden(args.molden, wavefunction.mol, wavefunction.orbitals)}")
    ref_dm = None if reference is None else reference.density_matrix
    for what in cubes:
        path = Path(args.cube_dir) / f"{atoms.get_chemical_formula()}_{what.lower().replace('+', 'p')}.cube"
        write_cube(
            path, wavefunction.mol, what, wavefunction.orbitals, reference_density=ref_dm, points=args.cube_points
        )
        print(f"wrote {path}")
    if args.json:
        _write_results(args.json, [result])
    return 0


def predict_frames(args: argparse.Namespace, predictor, frames: list) -> int:
    """Every frame of a multi-frame input: the network in batches, then one line (and JSON record) per frame."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    predictions = predictor.predict_many(frames, batch_size=args.batch_size)
    results, verdicts = [], {}
    print(f"{len(frames)} frames, model {args.model}" + ("" if args.no_assess else "; reliability checked per frame"))
    print(f"{'frame':>6}  {'formula':<12}{'gap / eV':>10}{'dipole / D':>12}{'ms':>8}  verdict")
    for k, (atoms, prediction) in enumerate(
        zip(tqdm(frames, unit="frame", desc="solve", disable=args.quiet), predictions, strict=True)
    ):
        result, _, _ = predict_one(predictor, atoms, args.reference, not args.no_assess, prediction=prediction)
        result["frame"] = k
        results.append(result)
        verdict = result.get("assessment", {}).get("verdict", "-")
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        ms = (result["predict_seconds"] + result["solve_seconds"]) * 1000
        gap, dipole = result["gap_ev"], result["dipole_norm_debye"]
        tqdm.write(f"{k:>6}  {result['formula']:<12}{gap:>10.3f}{dipole:>12.3f}{ms:>8.1f}  {verdict}")
    seconds = time.perf_counter() - t0
    network = sum(r["predict_seconds"] for r in results)
    counts = ", ".join(f"{n} {word}" for word, n in sorted(verdicts.items()) if word != "-")
    print(
        f"{len(frames)} frames in {seconds:.2f} s (network {network:.3f} s, {network / len(frames) * 1000:.1f} ms a "
        f"frame in batches of {args.batch_size})" + (f"; verdicts: {counts}" if counts else "")
    )
    if args.json:
        _write_results(args.json, results)
    return 0


def _write_results(path: str, results: list[dict]) -> None:
    """JSON (one object, or a list for several frames), or JSON lines (one record a frame) for a .jsonl name."""
    from phisnet.files import json_text, write_text_atomic

    if str(path).endswith(".jsonl"):
        text = "".join(json_text(result) + "\n" for result in results)
    else:
        text = json_text(results[0] if len(results) == 1 else results, indent=2)
    write_text_atomic(path, text)
    print(f"wrote {path}")


def predict_one(predictor, atoms, with_reference: bool, with_assessment: bool = True, prediction=None):
    """Prediction (optionally its reliability check and the PySCF reference) of one molecule as a JSON-able dict.

    ``prediction``: the network's ``Prediction`` for ``atoms`` when already made (``Predictor.predict_many``).
    """
    from phisnet.observables import predict_wavefunction
    from phisnet.reference import HARTREE_EV

    charge = int(atoms.info.get("charge", 0))
    wf = predict_wavefunction(predictor, atoms, charge=charge, prediction=prediction)
    orb = wf.orbitals
    dipole = wf.dipole()
    result = {
        "formula": atoms.get_chemical_formula(),
        "symbols": atoms.get_chemical_symbols(),
        "positions_angstrom": atoms.positions.tolist(),
        "charge": charge,
        "xc": wf.xc,
        "basis": wf.basis,
        "predict_seconds": wf.predict_seconds,
        "solve_seconds": wf.solve_seconds,
        "subspace": wf.subspace,
        "n_occupied": orb.n_occupied,
        "orbital_energies_hartree": orb.energies.tolist(),
        "homo_hartree": orb.homo,
        "lumo_hartree": orb.lumo,
        "gap_ev": orb.gap * HARTREE_EV,
        "dipole_debye": dipole.tolist(),
        "dipole_norm_debye": float(np.linalg.norm(dipole)),
        "mulliken_charges": wf.charges().tolist(),
    }
    if with_assessment:
        from phisnet.trust import assess

        result["assessment"] = assess(predictor, atoms, wavefunction=wf).to_json()
    reference_orbitals = None
    if with_reference:
        result["reference"], reference_orbitals = _reference(atoms, wf, charge)
    return result, wf, reference_orbitals


def _reference(atoms, wf, charge: int) -> tuple[dict, object]:
    """The PySCF reference of ``atoms`` at the model's level, compared with the prediction ``wf``."""
    from phisnet.metrics import MICRO
    from phisnet.observables import dipole_moment, energy_and_forces, solve
    from phisnet.reference import HARTREE_EV, run_dft

    orb = wf.orbitals
    ref = run_dft(atoms, xc=wf.xc, basis=wf.basis, charge=charge, forces=True)
    reference_orbitals = solve(ref.hamiltonian, ref.overlap, int(atoms.numbers.sum()) - charge)
    energy, forces = energy_and_forces(wf.mol, orb, wf.xc)
    comparison = {
        "scf_seconds": ref.seconds,
        "scf_iterations": ref.n_iterations,
        "converged": ref.converged,
        "energy_hartree": ref.energy,
        "orbital_energies_hartree": ref.mo_energy.tolist(),
        "homo_hartree": reference_orbitals.homo,
        "lumo_hartree": reference_orbitals.lumo,
        "gap_ev": reference_orbitals.gap * HARTREE_EV,
        "dipole_debye": dipole_moment(wf.mol, reference_orbitals.density_matrix).tolist(),
        "H_MAE_uHa": float(np.abs(wf.hamiltonian - ref.hamiltonian).mean() * MICRO),
        "predicted_density_energy_hartree": energy,
        "energy_error_mev": (energy - ref.energy) * HARTREE_EV * 1000,
        "force_mae_mev_per_angstrom": float(np.abs(forces - ref.forces).mean() * HARTREE_EV * 1000),
    }
    return comparison, reference_orbitals


def format_prediction(result: dict, model: str) -> str:
    """A human-readable block for one predicted molecule."""
    return "\n".join(_header_lines(result, model) + _comparison_lines(result) + _orbital_lines(result))


def _header_lines(result: dict, model: str) -> list[str]:
    """The reliability verdict, the molecule, the model and the timing."""
    ref = result.get("reference")
    lines = [
        f"{result['formula']} ({len(result['symbols'])} atoms, charge {result['charge']}), model {model}, "
        f"{result['xc']}/{result['basis']}",
        f"prediction {result['predict_seconds'] + result['solve_seconds']:.3f} s "
        f"(network {result['predict_seconds']:.3f} s, eigenproblem {result['solve_seconds']:.3f} s)"
        + (f"; PySCF SCF {ref['scf_seconds']:.2f} s, {ref['scf_iterations']} iterations" if ref else ""),
    ]
    if "assessment" in result:
        from phisnet.trust import Assessment

        lines.insert(0, "reliability: " + Assessment(**result["assessment"]).summary())
    if result.get("subspace"):
        lines.append(
            f"orbitals solved above overlap eigenvalue {result['subspace']:g} "
            f"({len(result['orbital_energies_hartree'])} orbitals; the model's "
            "subspace, chosen on its validation data)"
        )
    return lines


def _comparison_lines(result: dict) -> list[str]:
    """HOMO, LUMO, gap and dipole, beside the reference and the error when there is one."""
    from phisnet.reference import HARTREE_EV

    ref = result.get("reference")
    lines = ["", f"{'':<24}{'predicted':>12}" + (f"{'reference':>12}{'error':>12}" if ref else "")]

    def row(label, key, scale=1.0, fmt="{:12.3f}"):
        value = result[key] * scale
        text = f"{label:<24}" + fmt.format(value)
        if ref:
            text += fmt.format(ref[key] * scale) + fmt.format(value - ref[key] * scale)
        return text

    lines += [
        row("HOMO / eV", "homo_hartree", HARTREE_EV),
        row("LUMO / eV", "lumo_hartree", HARTREE_EV),
        row("HOMO-LUMO gap / eV", "gap_ev"),
    ]
    norm = result["dipole_norm_debye"]
    dipole_line = f"{'dipole / D':<24}{norm:12.3f}"
    if ref:
        ref_norm = float(np.linalg.norm(ref["dipole_debye"]))
        dipole_line += f"{ref_norm:12.3f}{norm - ref_norm:12.3f}"
    lines.append(dipole_line)
    if ref:
        lines += [
            f"{'H MAE / uHa':<24}{ref['H_MAE_uHa']:12.1f}",
            f"{'energy / Ha':<24}{ref['predicted_density_energy_hartree']:12.6f}{ref['energy_hartree']:12.6f}"
            f"{ref['energy_error_mev']:10.2f} meV",
            f"{'force MAE / meV/A':<24}{ref['force_mae_mev_per_angstrom']:12.2f}",
            "(energy and forces of the predicted density in the PySCF functional, no SCF; see phisnet.observables)",
        ]
    return lines


def _orbital_lines(result: dict) -> list[str]:
    """Occupied and the lowest virtual orbital energies, Mulliken charges."""
    from phisnet.reference import HARTREE_EV

    occupied = result["orbital_energies_hartree"][: result["n_occupied"]]
    virtual = result["orbital_energies_hartree"][result["n_occupied"] : result["n_occupied"] + 5]
    charges = zip(result["symbols"], result["mulliken_charges"], strict=True)
    return [
        "",
        "occupied orbital energies / eV: " + " ".join(f"{e * HARTREE_EV:.3f}" for e in occupied),
        "lowest virtual energies / eV:   " + " ".join(f"{e * HARTREE_EV:.3f}" for e in virtual),
        "Mulliken charges: " + "  ".join(f"{s}{k + 1} {q:+.3f}" for k, (s, q) in enumerate(charges)),
    ]
