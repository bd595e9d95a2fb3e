"""phisnet app, home page ("Predict" in the navigation of app.py). Run the app with: streamlit run app.py

Choose a model and a molecule; the model predicts the Kohn-Sham Hamiltonian, and the page
shows the orbitals, gap and dipole that follow, beside PySCF's reference on demand. The
pages in pages/ look closer at the same molecule.
"""

import numpy as np
import pandas as pd
import streamlit as st

import app_common as ui
from phisnet import InputError
from phisnet.basis import layout
from phisnet.dataset import HamiltonianDataset, sample_atoms
from phisnet.io import format_for_filename, read_molecules
from phisnet.metrics import model_split
from phisnet.molecules import PAPER_MOLECULES
from phisnet.observables import energy_and_forces, predict_wavefunction
from phisnet.reference import HARTREE_EV
from phisnet.split_rebuild import model_test_data
from phisnet.viz import FORCE_ARROW_ANGSTROM, view_html

#: A one-time message after the app switched a user's molecule to the general model.
SWITCH_NOTE_KEY = "phisnet_switch_note"
ui.page_setup("phisnet")
st.caption(
    "SE(3)-equivariant prediction of Kohn-Sham Hamiltonians (PhiSNet, Unke et al. 2021) with PySCF as the "
    "reference. Pick a model and a molecule; the pages on the left show its Hamiltonian, orbitals in 3D, "
    "equivariance, the SCF guess, training and the model cards."
)

with st.sidebar.expander("Upload a checkpoint"):
    checkpoint = st.file_uploader("phisnet checkpoint (.pt), loaded safely (weights only)", type=["pt"])
    if checkpoint is not None:
        path = ui.save_uploaded_checkpoint(checkpoint)
        try:
            ui.cached_model(path)
        except InputError as exc:
            st.error(str(exc))  # it names the user's file: saved under that name
        else:
            st.session_state["phisnet_uploaded_model"] = (checkpoint.name, path)
            st.session_state[ui.MODEL_KEY] = f"uploaded: {checkpoint.name}"
label, model_path, predictor = ui.model_sidebar()
card = ui.ROOT / "pretrained" / f"{label}.md"
if card.is_file():
    with st.sidebar.expander("Model card"):
        st.markdown(card.read_text())


@st.cache_resource(show_spinner="Reading the model's dataset ...")
def dataset(path: str):
    return HamiltonianDataset(path)


data_path = model_test_data(predictor.info, model_path, ui.ROOT)  # its dataset, or its rebuilt test split
sources = ["Named molecule", "SMILES", "Upload a file"]
if data_path is not None:
    sources.insert(0, "Test geometry from the model's data")
source_kind = st.radio("Molecule from", sources, horizontal=True, key="molecule_source")
trained = ui.trained_molecule(predictor)
atoms, name = None, None
charge = None
if source_kind in ("SMILES", "Upload a file"):
    charge = st.number_input(
        "Total charge (empty: from the input, the SMILES's formal charges or an SDF's M  CHG)",
        min_value=-10,
        max_value=10,
        value=None,
        step=1,
        key="molecule_charge",
    )
try:
    if source_kind == "Named molecule":
        names = list(PAPER_MOLECULES)
        choice = st.selectbox("Molecule", names, index=names.index(trained) if trained in names else 0)
        atoms, name = read_molecules(choice, format="name")[0], choice
    elif source_kind == "SMILES":
        smiles = st.text_input("SMILES (hydrogens are added, geometry from RDKit's MMFF)", value="O")
        atoms, name = read_molecules(smiles, format="smiles", charge=charge)[0], smiles
    elif source_kind == "Upload a file":
        upload = st.file_uploader("XYZ, PDB, SDF/MOL, CIF or any format ASE reads")
        if upload is not None:
            if upload.size > ui.MAX_MOLECULE_BYTES:
                raise InputError(
                    f"{upload.name} is {upload.size / 1e6:.1f} MB; molecule files up to "
                    f"{ui.MAX_MOLECULE_BYTES / 1e6:.0f} MB are accepted."
                )
            try:
                frames = read_molecules(upload.getvalue(), format=format_for_filename(upload.name), charge=charge)
            except InputError as exc:
                raise InputError(f"{upload.name}: {exc}") from None
            k = 0
            if len(frames) > 1:
                k = st.number_input(f"Frame (the file holds {len(frames)})", 0, len(frames) - 1, 0)
            atoms, name = frames[k], f"{upload.name} (frame {k})"
    else:
        ds = dataset(str(data_path))
        test = model_split(predictor, ds, "test", path=f"the model {label}")  # its own test split, or why not
        k = st.number_input(f"Test geometry (of {len(test)}; the model never trained on these)", 0, len(test) - 1, 0)
        atoms = sample_atoms(ds[test[k]])
        atoms.info["charge"] = 0
        name = f"{ds[test[k]].get('molecule', trained)} test geometry {k}"
    if atoms is not None and source_kind in ("SMILES", "Upload a file"):
        switch = ui.default_model_for(atoms, label, predictor)
        if switch is not None:  # a user's own molecule goes to a model good for it, unless they chose otherwise
            better, why = switch
            if not ui.is_own_molecule(atoms, predictor):
                formula, trained = atoms.get_chemical_formula(), ui.trained_molecule(predictor)
                why = f"{formula} is not {trained}, the molecule of the model {label}: {why}"
            ui.use_model(better, pinned=False)
            note = f"{why[0].upper()}{why[1:]}. Choose another model in the sidebar to override."
            st.session_state[SWITCH_NOTE_KEY] = note
            st.rerun()
    if atoms is not None:  # predict_wavefunction refuses elements the model does not know
        wf = predict_wavefunction(predictor, atoms, charge=int(atoms.info.get("charge", 0)))
except InputError as exc:
    st.error(str(exc))
    if atoms is not None and not set(atoms.numbers.tolist()) <= set(predictor.elements):
        others, formula = ui.models_for(atoms, exclude=label), atoms.get_chemical_formula()
        if others:
            st.info(f"Models that know every element of {formula}: {', '.join(others)}.")
            if st.button(f"Use {others[0]}"):
                ui.use_model(others[0], pinned=True)
                st.rerun()
        else:
            st.info(f"No shipped model knows every element of {formula}: {ui.elements_known()}")
    st.stop()

if SWITCH_NOTE_KEY in st.session_state:
    st.info(st.session_state.pop(SWITCH_NOTE_KEY))
if atoms is None:
    st.info("Choose a molecule to begin.")
    st.stop()
ui.remember_molecule(atoms, name)

lay = layout(atoms, predictor.info.basis)
orbitals = wf.orbitals
charged = int(atoms.info.get("charge", 0))
st.subheader(
    f"{atoms.get_chemical_formula()}{f' ({charged:+d})' if charged else ''}: {len(atoms)} atoms, {lay.nao} orbitals, "
    f"{int(orbitals.occupations.sum())} electrons"
)
ui.show_verdict(atoms, model_path)
dipole = wf.dipole()
c1, c2, c3, c4, c5 = st.columns(5)
predict_seconds = predictor.median_seconds(atoms) + wf.solve_seconds
threads = predictor.threads_for(atoms)
c1.metric(
    "Prediction time / ms",
    f"{predict_seconds * 1000:.1f}",
    help=f"network (median of 5 runs, {threads} torch thread{'s' if threads > 1 else ''}) + eigenproblem",
)
c2.metric("HOMO / eV", f"{orbitals.homo * HARTREE_EV:.3f}")
c3.metric("LUMO / eV", f"{orbitals.lumo * HARTREE_EV:.3f}")
c4.metric("HOMO-LUMO gap / eV", f"{orbitals.gap * HARTREE_EV:.3f}")
c5.metric("Dipole / D", f"{np.linalg.norm(dipole):.3f}")
st.caption(
    "Orbitals from the predicted Hamiltonian with PySCF's exact overlap (H C = S C e)"
    + (
        f", solved in the span of the overlap's eigenvectors above {wf.subspace:g} ({len(orbitals.energies)} of "
        f"{len(wf.exact_overlap)} functions; the model's setting, chosen on its validation data)."
        if wf.subspace
        else "."
    )
)

table = pd.DataFrame(
    {
        "orbital": np.arange(1, len(orbitals.energies) + 1),
        "occupation": orbitals.occupations,
        "predicted / eV": orbitals.energies * HARTREE_EV,
    }
)
with_reference = ui.want_reference(atoms, predictor)
if with_reference:
    ref = ui.reference_for(atoms, predictor)
    if not ref.converged:
        st.error(f"The reference SCF did not converge in {ref.n_iterations} iterations; the comparison is not valid.")
    energy, _ = energy_and_forces(wf.mol, orbitals, wf.xc, forces=False)
    occupied = slice(0, orbitals.n_occupied)
    eps_mae = float(np.abs(orbitals.energies[occupied] - ref.mo_energy[occupied]).mean())
    d1, d2, d3, d4, d5 = st.columns(5)
    d1.metric("PySCF SCF time / s", f"{ref.seconds:.2f}", help=f"{ref.n_iterations} SCF iterations")
    d2.metric("Speed-up", f"{ref.seconds / predict_seconds:.0f}x")
    d3.metric("Occupied orbital energy MAE / meV", f"{eps_mae * HARTREE_EV * 1000:.3g}")
    d4.metric(
        "Energy error / meV",
        f"{(energy - ref.energy) * HARTREE_EV * 1000:.3g}",
        help="PySCF's energy functional at the predicted density, against the SCF energy",
    )
    n_occ = orbitals.n_occupied
    d5.metric("PySCF gap / eV", f"{(ref.mo_energy[n_occ] - ref.mo_energy[n_occ - 1]) * HARTREE_EV:.3f}")
    n_mo = len(orbitals.energies)  # fewer than the basis functions when the model solves in a subspace
    table["PySCF / eV"] = ref.mo_energy[:n_mo] * HARTREE_EV
    table["error / meV"] = (orbitals.energies - ref.mo_energy[:n_mo]) * HARTREE_EV * 1000
else:
    st.caption("Switch on 'PySCF reference' in the sidebar to compare with DFT.")
forces = None
if predictor.info.end_to_end_energy:
    target = "CCSD(T)" if predictor.info.beyond_scf else predictor.info.xc.upper()
    st.markdown(f"**End-to-end energy and forces** (model trained to reproduce {target})")
    e2e_energy, forces = ui.cached_end_to_end(ui.geometry_key(atoms), model_path)
    f_norm = np.linalg.norm(forces, axis=1)
    g1, g2, g3, g4 = st.columns(4)
    g1.metric(
        "Energy / Ha",
        f"{e2e_energy:.6f}",
        help="E = 1/2 Tr[P (h + F)] + E_nuc of the predicted Fock matrix F, with the exact h and S",
    )
    g2.metric("Largest force / (eV/A)", f"{f_norm.max() * HARTREE_EV:.3f}", help="-dE/dR through the network")
    if with_reference:
        reference_result = ui.end_to_end_reference(atoms, predictor)
        if reference_result is None:
            st.caption(f"No {target} reference above {ui.MAX_CCSD_T_ATOMS} atoms in the app (its cost grows steeply).")
        else:
            ref_label, ref_energy, ref_forces = reference_result
            g3.metric(f"Energy error vs {ref_label} / meV", f"{(e2e_energy - ref_energy) * HARTREE_EV * 1000:.1f}")
            g4.metric(
                f"Force MAE vs {ref_label} / (meV/A)", f"{np.abs(forces - ref_forces).mean() * HARTREE_EV * 1000:.1f}"
            )
    st.caption(f"Green arrows in the 3D view: end-to-end forces (the largest drawn {FORCE_ARROW_ANGSTROM:g} A long).")
left, right = st.columns([3, 2])
left.dataframe(table, hide_index=True, height=330)
with right:
    st.iframe(view_html(atoms, width=420, height=320, forces=[forces]), height=330)
