"""Molecular orbitals and densities in 3D, predicted beside reference, with molden and cube downloads."""

import streamlit as st

import app_common as ui
from phisnet.observables import align_orbital_signs, predict_wavefunction, solve
from phisnet.reference import HARTREE_EV
from phisnet.viz import cube_text, molden_text, orbital_label, view_html

label, path, predictor, atoms, name = ui.molecule_page("Orbitals")
ui.show_verdict(atoms, path)
wf = predict_wavefunction(predictor, atoms, charge=int(atoms.info.get("charge", 0)))
orbitals = wf.orbitals
reference = None
if ui.want_reference(atoms, predictor):
    ref = ui.reference_for(atoms, predictor)
    reference = solve(ref.hamiltonian, ref.overlap, int(orbitals.occupations.sum()))
    orbitals = align_orbital_signs(orbitals, reference, wf.exact_overlap)

homo = orbitals.n_occupied - 1
shortcuts = ["HOMO-1", "HOMO", "LUMO", "LUMO+1", "any orbital", "total density"]
if reference is not None:
    shortcuts.append("density difference")
what = st.radio("Show", shortcuts, index=1, horizontal=True)
if what == "any orbital":
    index = st.selectbox(
        "Orbital",
        range(len(orbitals.energies)),
        index=homo,
        format_func=lambda k: f"{k + 1}: {orbital_label(k, orbitals)}, {orbitals.energies[k] * HARTREE_EV:.2f} eV",
    )
    spec = str(index + 1)
elif what in ("total density", "density difference"):
    spec = "density" if what == "total density" else "difference"
else:
    spec = what.lower()
signed = spec != "density"
default_iso = {"density": 0.05, "difference": 0.002}.get(spec, 0.05)
isovalue = st.slider("Isovalue", 0.0005, 0.2, default_iso, step=0.0005, format="%.4f")
points = st.sidebar.select_slider("Cube grid points per axis", [30, 40, 60, 80], value=40)


@st.cache_data(show_spinner="Evaluating the grid ...", max_entries=32)
def cubes(model_path: str, key: tuple, spec: str, points: int, with_reference: bool, _wf, _reference):
    """Predicted (and reference) cube text; the leading arguments are the cache key."""
    ref_dm = None if _reference is None else _reference.density_matrix
    predicted = cube_text(_wf.mol, spec, _wf.orbitals, reference_density=ref_dm, points=points)
    if _reference is None or spec == "difference":
        return predicted, None
    return predicted, cube_text(_wf.mol, spec, _reference, points=points)


wf.orbitals = orbitals
predicted_cube, reference_cube = cubes(path, ui.geometry_key(atoms), spec, points, reference is not None, wf, reference)
if spec == "difference":
    panels, titles = [predicted_cube], ["predicted - reference density"]
elif reference_cube is None:
    panels, titles = [predicted_cube], ["predicted"]
else:
    panels, titles = [predicted_cube, reference_cube], ["predicted", "PySCF reference"]
for column, title in zip(st.columns(len(titles)), titles, strict=True):  # above the panels: 3Dmol labels hid
    column.markdown(f"**{title[0].upper()}{title[1:]}**")
st.iframe(view_html(atoms, panels, isovalue=isovalue, signed=signed, width=900, height=430), height=440)
st.caption(
    "Blue: positive, red: negative isosurface. Orbitals come from the predicted H with the exact overlap"
    + ("; their signs are matched to the reference orbitals" if reference is not None else "")
    + ". Drag to rotate (the panels move together), scroll to zoom."
)
formula = atoms.get_chemical_formula()
d1, d2 = st.columns(2)
d1.download_button(
    "Predicted orbitals (molden)", molden_text(wf.mol, orbitals), file_name=f"{formula}_predicted.molden"
)
d2.download_button("This grid (cube)", predicted_cube, file_name=f"{formula}_{spec}.cube")
