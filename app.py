"""phisnet app, home page. Run with: streamlit run app.py

Until the model lands this page shows what the foundation does: read and validate a
molecule, show its def2-SVP orbital layout, and run the PySCF reference calculation
that the model will learn to replace.
"""

import pandas as pd
import streamlit as st

from phisnet import InputError
from phisnet.basis import layout
from phisnet.io import read_molecules
from phisnet.molecules import PAPER_MOLECULES
from phisnet.reference import run_dft

st.set_page_config(page_title="phisnet", layout="wide")
st.title("phisnet")
st.caption(
    "SE(3)-equivariant prediction of Kohn-Sham Hamiltonians (PhiSNet, Unke et al. 2021). "
    "This first version reads molecules and runs the PySCF PBE/def2-SVP reference."
)


@st.cache_data(show_spinner=False)
def reference(symbols: tuple, positions: tuple, charge: int, spin: int):
    import ase

    atoms = ase.Atoms(symbols, positions=positions)
    ref = run_dft(atoms, charge=charge, spin=spin, forces=False)
    return ref.energy, ref.n_iterations, ref.seconds, ref.converged, ref.mo_energy, ref.mo_occ


source_kind = st.radio("Molecule from", ["Paper molecule", "SMILES", "Upload a file"], horizontal=True)
col_charge, col_spin = st.columns(2)
charge = col_charge.number_input("Charge", value=0, step=1)
spin = col_spin.number_input("Unpaired electrons", value=0, min_value=0, step=1)
source, fmt = None, None
if source_kind == "Paper molecule":
    source = st.selectbox("Molecule", PAPER_MOLECULES)
    fmt = "name"
elif source_kind == "SMILES":
    source = st.text_input("SMILES", value="CCO")
    fmt = "smiles"
else:
    upload = st.file_uploader("XYZ, PDB, SDF/MOL, CIF or any format ASE reads")
    if upload is not None:
        source = upload.getvalue()
        suffix = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        fmt = {"xyz": "xyz", "pdb": "proteindatabank", "sdf": "sdf", "mol": "sdf", "cif": "cif"}.get(suffix)

if source is None:
    st.info("Choose a molecule to begin.")
    st.stop()

try:
    molecules = read_molecules(source, format=fmt, charge=int(charge), spin=int(spin))
except InputError as exc:
    st.error(str(exc))
    st.stop()

atoms = molecules[0]
if len(molecules) > 1:
    st.info(f"The file holds {len(molecules)} structures; showing the first.")
lay = layout(atoms)
st.subheader(f"{atoms.get_chemical_formula()}: {len(atoms)} atoms, {lay.nao} def2-SVP orbitals")
st.dataframe(
    pd.DataFrame(
        {
            "element": atoms.get_chemical_symbols(),
            "x / Angstrom": atoms.positions[:, 0],
            "y / Angstrom": atoms.positions[:, 1],
            "z / Angstrom": atoms.positions[:, 2],
            "shells (l)": [" ".join("spdfg"[l] for l in a.shells) for a in lay.atoms],
        }
    ),
    hide_index=True,
)

if st.button("Run the PBE/def2-SVP reference with PySCF"):
    with st.spinner("PySCF is running the SCF ..."):
        energy, iterations, seconds, converged, mo_energy, mo_occ = reference(
            tuple(atoms.get_chemical_symbols()), tuple(map(tuple, atoms.positions)), int(charge), int(spin)
        )
    if not converged:
        st.error(f"The SCF did not converge in {iterations} iterations; these numbers are not a result.")
    c1, c2, c3 = st.columns(3)
    c1.metric("Energy / Hartree", f"{energy:.6f}")
    c2.metric("SCF iterations", iterations)
    c3.metric("SCF time / s", f"{seconds:.2f}")
    st.dataframe(
        pd.DataFrame({"orbital energy / Hartree": mo_energy, "occupation": mo_occ}),
        hide_index=True,
    )
