"""Rotate the molecule and watch the predicted Hamiltonian rotate with it: H(R x) = D H(x) D^T."""

import streamlit as st

import app_common as ui
from phisnet.equivariance import check, random_rotation_errors, rotate, rotation_from_angles
from phisnet.metrics import MICRO
from phisnet.viz import heatmap_figure, rotation_errors_figure, view_html

label, path, predictor, atoms, name = ui.molecule_page(
    "Equivariance",
    "D is the block-diagonal rotation of the AO basis (phisnet.conventions.ao_rotation); an exactly equivariant "
    "model makes the difference zero up to rounding.",
)
a, b, c = st.columns(3)
angles = (
    a.slider("Rotation about x / degrees", -180, 180, 40),
    b.slider("Rotation about y / degrees", -180, 180, -25),
    c.slider("Rotation about z / degrees", -180, 180, 70),
)
R = rotation_from_angles(*angles)
result = check(predictor, atoms, R)
left, right = st.columns([2, 3])
with left:
    st.iframe(view_html(rotate(atoms, R), width=380, height=330), height=340)
    st.metric("max |H(Rx) - D H(x) D^T| / uHa", f"{result.h_error * MICRO:.4f}")
    st.metric("relative to max |H|", f"{result.h_relative_error:.1e}")
    st.metric("max |S(Rx) - D S(x) D^T|", f"{result.s_error:.1e}")
with right:
    labels = [s.strip() for s in ui.reference_labels(atoms, predictor)]
    tab1, tab2, tab3 = st.tabs(["H of the rotated molecule", "D H D^T", "difference"])
    tab1.plotly_chart(heatmap_figure(result.hamiltonian_rotated, labels, "predicted H(Rx)"), width="stretch")
    tab2.plotly_chart(heatmap_figure(result.hamiltonian_transformed, labels, "D H(x) D^T"), width="stretch")
    tab3.plotly_chart(
        heatmap_figure(result.hamiltonian_rotated - result.hamiltonian_transformed, labels, "difference"),
        width="stretch",
    )


@st.cache_data(show_spinner="Predicting for random rotations in float32 and float64 ...", max_entries=16)
def rotation_errors(model_path: str, key: tuple, n: int):
    molecule = ui.atoms_from_key(key)
    return {
        "float32": random_rotation_errors(ui.cached_model(model_path), molecule, n),
        "float64": random_rotation_errors(ui.cached_model(model_path, double=True), molecule, n),
    }


n = st.select_slider("Random rotations", [5, 10, 20, 50], value=10)
errors = rotation_errors(path, ui.geometry_key(atoms), n)
st.plotly_chart(rotation_errors_figure(errors), width="stretch")
st.caption(
    f"Largest relative error: float32 {errors['float32'].max():.1e}, float64 {errors['float64'].max():.1e}. "
    "The float64 model is the same weights rebuilt in double precision; what remains is rounding."
)
