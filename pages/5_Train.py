"""Generate a small dataset and train a small model in a background process, with live progress."""

import streamlit as st

import app_common as ui
from phisnet import InputError
from phisnet.io import read_molecules
from phisnet.jobs import JobSpec, list_jobs, start, stop
from phisnet.viz import learning_curve_figure

ui.page_setup("Train")
st.caption(
    "A job runs `phisnet generate` (PySCF PBE/def2-SVP on thermally sampled structures) and then trains a small "
    "PhiSNet, in its own process: it keeps running when you reload or close the page, and the finished model "
    "appears in the model list as 'trained: ...'. Bigger runs belong to `train.py` (see docs/training.md)."
)

with st.form("new job"):
    a, b, c = st.columns(3)
    molecule = a.text_input("Molecule (name, SMILES)", value="water")
    n_structures = b.slider("Structures", 10, 200, 40, step=10, help="about 1 s each for water, 8 s for ethanol")
    max_steps = c.slider("Training steps", 50, 2000, 300, step=50)
    channels = a.select_slider("Channels", [4, 8, 16], value=8)
    max_minutes = b.slider("Time limit / minutes", 1, 60, 10)
    submitted = st.form_submit_button("Start")
if submitted:
    try:
        read_molecules(molecule)  # a clear error now rather than a failed job later
        folder = start(
            JobSpec(
                molecule=molecule,
                n_structures=n_structures,
                max_steps=max_steps,
                channels=channels,
                max_minutes=float(max_minutes),
            ),
            root=ui.JOBS_ROOT,
        )
        st.success(f"Started job {folder.name}.")
    except InputError as exc:
        st.error(str(exc))


@st.fragment(run_every=3)
def jobs_panel():
    jobs = list_jobs(ui.JOBS_ROOT)
    if not jobs:
        st.info("No jobs yet.")
        return
    for job in jobs:
        with st.container(border=True):
            head, button = st.columns([5, 1])
            head.markdown(f"**{job.name}**: {job.spec.molecule}, {job.phase}. {job.message}")
            if job.active and button.button("Stop", key=f"stop-{job.name}"):
                stop(job.folder)
                st.rerun()
            if job.phase == "finished" and button.button("Use", key=f"use-{job.name}"):
                st.session_state[ui.MODEL_KEY] = f"trained: {job.name}"
                st.success("Selected; the other pages now use this model.")
            st.progress(
                min(job.generated / job.spec.n_structures, 1.0),
                text=f"data: {job.generated} / {job.spec.n_structures} structures",
            )
            st.progress(
                min(job.step / job.spec.max_steps, 1.0), text=f"training: step {job.step} / {job.spec.max_steps}"
            )
            if job.metrics:
                st.plotly_chart(learning_curve_figure(job.metrics, title=""), width="stretch", key=f"c-{job.name}")


jobs_panel()
