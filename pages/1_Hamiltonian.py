"""Predicted against reference Hamiltonian: heatmaps with AO labels, orbital levels, the paper's metrics."""

import numpy as np
import pandas as pd
import streamlit as st

import app_common as ui
from phisnet.metrics import MICRO, orbital_errors
from phisnet.observables import predict_wavefunction
from phisnet.viz import heatmap_figure, levels_figure

label, path, predictor, atoms, name = ui.molecule_page("Hamiltonian", "Matrices in Hartree, PySCF AO order.")
wf = predict_wavefunction(predictor, atoms, charge=int(atoms.info.get("charge", 0)))
labels = [s.strip() for s in wf.mol.ao_labels()]
reference = ui.reference_for(atoms, predictor) if ui.want_reference(atoms, predictor) else None

matrix = st.radio("Matrix", ["Hamiltonian H", "Overlap S"], horizontal=True)
is_h = matrix.startswith("H")
predicted = wf.hamiltonian if is_h else wf.overlap
unit = "Ha" if is_h else ""
if reference is None:
    st.plotly_chart(heatmap_figure(predicted, labels, f"predicted {matrix}", unit), width="stretch")
    st.info("Switch on 'PySCF reference' in the sidebar to compare with DFT.")
else:
    exact = reference.hamiltonian if is_h else reference.overlap
    zmax = float(np.percentile(np.abs(exact), 98))
    a, b = st.columns(2)
    a.plotly_chart(heatmap_figure(predicted, labels, f"predicted {matrix}", unit, zmax=zmax), width="stretch")
    b.plotly_chart(heatmap_figure(exact, labels, f"PySCF {matrix}", unit, zmax=zmax), width="stretch")
    error = predicted - exact
    a.plotly_chart(heatmap_figure(error, labels, "predicted - reference", unit), width="stretch")

    n_occ = wf.orbitals.n_occupied
    eps, psi = orbital_errors(wf.hamiltonian, wf.overlap, reference.hamiltonian, reference.overlap, n_occ)
    metrics = pd.DataFrame(
        [
            {
                "H MAE / uHa": np.abs(wf.hamiltonian - reference.hamiltonian).mean() * MICRO,
                "S MAE / 1e-6": np.abs(wf.overlap - reference.overlap).mean() * MICRO,
                "eps MAE / uHa": eps * MICRO,
                "psi / %": psi * 100,
            }
        ]
    )
    b.markdown("**The paper's metrics for this molecule** (eps and psi from predicted H and S, as in the paper)")
    b.dataframe(metrics, hide_index=True)
    worst = np.unravel_index(np.abs(error).argmax(), error.shape)
    b.caption(f"Largest error {error[worst] * MICRO:.0f} uHa at ({labels[worst[0]]}, {labels[worst[1]]}).")
st.plotly_chart(
    levels_figure(wf.orbitals.energies, wf.orbitals.n_occupied, None if reference is None else reference.mo_energy),
    width="stretch",
)
