"""phisnet app, home page. Run with: streamlit run app.py

Choose a model and a molecule; the model predicts the Kohn-Sham Hamiltonian and overlap,
and the page shows the orbitals that follow from them, beside PySCF's reference on demand.
"""

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import streamlit as st

from phisnet import InputError
from phisnet.basis import layout
from phisnet.io import format_for_filename, read_molecules
from phisnet.model import list_pretrained, load
from phisnet.molecules import PAPER_MOLECULES
from phisnet.observables import solve
from phisnet.reference import HARTREE_EV, run_dft

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="phisnet", layout="wide")
st.title("phisnet")
st.caption(
    "SE(3)-equivariant prediction of Kohn-Sham Hamiltonians and overlaps (PhiSNet, Unke et al. 2021), "
    "with PySCF as the reference."
)


@st.cache_resource(show_spinner="Loading the model ...")
def cached_model(path: str):
    predictor = load(path)
    predictor.warm_up()  # so the prediction time shown is the steady-state one
    return predictor


@st.cache_data(show_spinner=False)
def reference(symbols: tuple, positions: tuple, charge: int, spin: int, xc: str, basis: str):
    atoms = ase.Atoms(symbols, positions=positions)
    ref = run_dft(atoms, xc=xc, basis=basis, charge=charge, spin=spin, forces=False)
    return ref.energy, ref.n_iterations, ref.seconds, ref.converged, ref.mo_energy


models = list_pretrained(ROOT / "pretrained")
if not models:
    st.error("No model found in pretrained/; train one with train.py (see the README).")
    st.stop()
model_path = st.sidebar.selectbox("Model", models, format_func=lambda p: p.stem)
try:
    predictor = cached_model(str(model_path))
except InputError as exc:
    st.error(str(exc))
    st.stop()
meta = predictor.metadata
trained_molecule = (meta.get("data", {}).get("settings") or {}).get("molecule", "water")
st.sidebar.markdown(
    f"**{model_path.stem}**: {meta.get('xc', '?').upper()}/{meta.get('basis', '?')}, "
    f"trained on {meta.get('data', {}).get('n_structures', '?')} {trained_molecule} structures"
)
card = model_path.with_suffix(".md")
if card.is_file():
    with st.sidebar.expander("Model card"):
        st.markdown(card.read_text())

source_kind = st.radio("Molecule from", ["Named molecule", "SMILES", "Upload a file"], horizontal=True)
source, fmt = None, None
if source_kind == "Named molecule":
    names = list(PAPER_MOLECULES)
    default = names.index(trained_molecule) if trained_molecule in names else 0
    source = st.selectbox("Molecule", names, index=default)
    fmt = "name"
elif source_kind == "SMILES":
    source = st.text_input("SMILES", value="O")
    fmt = "smiles"
else:
    upload = st.file_uploader("XYZ, PDB, SDF/MOL, CIF or any format ASE reads")
    if upload is not None:
        source = upload.getvalue()
        fmt = format_for_filename(upload.name)

if source is None:
    st.info("Choose a molecule to begin.")
    st.stop()

try:
    molecules = read_molecules(source, format=fmt)
    atoms = molecules[0]
    predictor.check(atoms)
except InputError as exc:
    st.error(str(exc))
    st.stop()

if len(molecules) > 1:
    st.info(f"The file holds {len(molecules)} structures; showing the first.")
lay = layout(atoms, meta.get("basis", "def2-svp"))
n_electrons = int(atoms.numbers.sum()) - int(atoms.info.get("charge", 0))
st.subheader(f"{atoms.get_chemical_formula()}: {len(atoms)} atoms, {lay.nao} orbitals, {n_electrons} electrons")

prediction = predictor.predict(atoms)
orbitals = solve(prediction.hamiltonian, prediction.overlap, n_electrons)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Prediction time / ms", f"{prediction.seconds * 1000:.1f}")
c2.metric("HOMO / eV", f"{orbitals.homo * HARTREE_EV:.3f}")
c3.metric("LUMO / eV", f"{orbitals.lumo * HARTREE_EV:.3f}")
c4.metric("HOMO-LUMO gap / eV", f"{orbitals.gap * HARTREE_EV:.3f}")
st.caption("Orbitals from the predicted H and the predicted S (generalized eigenproblem).")

table = pd.DataFrame(
    {
        "orbital": np.arange(1, len(orbitals.energies) + 1),
        "occupation": orbitals.occupations,
        "predicted energy / Hartree": orbitals.energies,
    }
)
if st.checkbox("Compare with the PySCF reference (runs the DFT calculation)", value=False):
    with st.spinner("PySCF is running the SCF ..."):
        energy, iterations, seconds, converged, mo_energy = reference(
            tuple(atoms.get_chemical_symbols()),
            tuple(map(tuple, atoms.positions)),
            int(atoms.info.get("charge", 0)),
            int(atoms.info.get("spin", 0)),
            meta.get("xc", "pbe"),
            meta.get("basis", "def2-svp"),
        )
    if not converged:
        st.error(f"The reference SCF did not converge in {iterations} iterations; the comparison is not meaningful.")
    occupied = slice(0, n_electrons // 2)
    eps_mae = float(np.abs(orbitals.energies[occupied] - mo_energy[occupied]).mean())
    d1, d2, d3 = st.columns(3)
    d1.metric("PySCF SCF time / s", f"{seconds:.2f}", help=f"{iterations} SCF iterations")
    d2.metric("Speed-up", f"{seconds / prediction.seconds:.0f}x")
    d3.metric("Occupied orbital energy MAE / meV", f"{eps_mae * HARTREE_EV * 1000:.1f}")
    table["reference energy / Hartree"] = mo_energy
    table["error / meV"] = (orbitals.energies - mo_energy) * HARTREE_EV * 1000
st.dataframe(table, hide_index=True)
