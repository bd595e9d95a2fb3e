"""The predicted wavefunction as the SCF starting point, against PySCF's standard guesses."""

import pandas as pd
import streamlit as st

import app_common as ui
from phisnet.scf_guess import STANDARD_GUESSES, compare
from phisnet.viz import guess_figures

label, path, predictor, atoms, name = ui.molecule_page(
    "SCF guess",
    "PySCF runs the same calculation from each starting density to the same tolerance; a good guess saves "
    "iterations and changes no answer.",
)
ui.show_verdict(atoms, path)
guesses = st.multiselect("PySCF guesses to compare", STANDARD_GUESSES, default=list(STANDARD_GUESSES))


@st.cache_data(show_spinner=False, max_entries=32)
def comparison(model_path: str, key: tuple, guesses: tuple):
    return compare(ui.atoms_from_key(key), ui.cached_model(model_path), guesses, charge=key[2])


key = (path, ui.geometry_key(atoms), tuple(guesses))
done = st.session_state.setdefault("phisnet_scf_done", set())
if len(atoms) <= ui.AUTO_REFERENCE_ATOMS or key in done or st.button("Run PySCF from every guess"):
    with st.spinner(f"PySCF runs {len(guesses) + 1} SCF calculations (cached for this geometry) ..."):
        result = comparison(*key)
    done.add(key)
    bars, curves = guess_figures(result)
    st.plotly_chart(bars, width="stretch")
    st.plotly_chart(curves, width="stretch")
    table = pd.DataFrame(result.rows())
    st.dataframe(table.style.format({"energy / Ha": "{:.10f}"}), hide_index=True)
    predicted, others = result.results[0], result.results[1:]
    if others:
        minao = next((r for r in others if r.guess == "minao"), others[0])
        st.success(
            f"Predicted guess: {predicted.n_iterations} iterations against {minao.n_iterations} for {minao.guess}; "
            f"all final energies agree within {result.max_energy_spread:.1e} Ha "
            f"(tolerance {result.conv_tol:.0e} Ha)."
        )
else:
    st.info(f"{len(atoms)} atoms: each SCF takes a while on this machine, so it runs when you ask.")
