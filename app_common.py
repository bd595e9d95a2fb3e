"""What every page of the app shares: the model and molecule choice, and cached library calls.

Thin UI only: the science is in ``phisnet``. The chosen model and molecule live in
``st.session_state`` under keys of their own (not widget keys, which Streamlit drops when a
page stops drawing the widget), so every page of one browser tab sees the same choice and
another tab has its own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import ase
import numpy as np
import streamlit as st
import torch

from phisnet import InputError
from phisnet.checkpoint import ModelInfo
from phisnet.jobs import DEFAULT_ROOT, list_jobs
from phisnet.molecules import PAPER_MOLECULES, is_paper_molecule
from phisnet.predictor import list_pretrained, load
from phisnet.reference import run_dft
from phisnet.trust import DOUBTFUL_GRADIENT

DOUBTFUL_UHA = DOUBTFUL_GRADIENT * 1e6

ROOT = Path(__file__).resolve().parent
JOBS_ROOT = Path(os.environ.get("PHISNET_JOBS_DIR", ROOT / DEFAULT_ROOT))
MODEL_KEY, MOLECULE_KEY, REFERENCE_KEY = "phisnet_model", "phisnet_molecule", "phisnet_reference"
REFERENCE_TOGGLE_KEY = "phisnet_reference_toggle"
#: True once the user chose a model themselves (sidebar or a "Use" button): the app then never switches it.
PINNED_KEY = "phisnet_model_pinned"
#: Largest molecule file the app reads (the checkpoint limit is Streamlit's maxUploadSize).
MAX_MOLECULE_BYTES = 2_000_000
#: Molecules above this many atoms get their PySCF reference only on request.
AUTO_REFERENCE_ATOMS = 12
#: A reference estimated to take longer (seconds; ``phisnet.reference.estimate_scf_seconds``) runs only after a
#: click for that molecule, whatever the switch says.
ASK_REFERENCE_SECONDS = 30
#: Molecules up to this many atoms get the reliability check of every prediction automatically (one PySCF Fock
#: build: 0.03 s for water, 0.25 s for ethanol, 7 s for caffeine's 24 atoms on one thread); larger ones on request.
AUTO_ASSESS_ATOMS = 16


def page_setup(title: str) -> None:
    st.set_page_config(page_title="phisnet" if title == "phisnet" else f"phisnet: {title}", layout="wide")
    st.title(title)


def molecule_page(title: str, explanation: str = ""):
    """Header of a page about the chosen molecule: title, model sidebar, molecule, one-line caption.

    Returns (model label, checkpoint path, predictor, atoms, molecule name).
    """
    page_setup(title)
    label, path, predictor = model_sidebar()
    atoms, name = current_molecule(predictor)
    st.caption(f"{name} ({atoms.get_chemical_formula()}), model {label}. {explanation}")
    return label, path, predictor, atoms, name


# ----------------------------------------------------------------------------- models


@st.cache_resource(show_spinner="Loading the model ...")
def cached_model(path: str, double: bool = False):
    predictor = load(path, dtype=torch.float64 if double else torch.float32)
    predictor.warm_up()  # so the prediction time shown is the steady-state one
    return predictor


def available_models() -> dict[str, str]:
    """Label -> checkpoint path: shipped models, models trained on the Train page, an uploaded one."""
    models = {p.stem: str(p) for p in list_pretrained(ROOT / "pretrained")}
    for job in list_jobs(JOBS_ROOT):
        if job.best is not None:
            models[f"trained: {job.name}"] = str(job.best)
    uploaded = st.session_state.get("phisnet_uploaded_model")
    if uploaded:
        models[f"uploaded: {uploaded[0]}"] = uploaded[1]
    return models


def save_uploaded_checkpoint(upload) -> str:
    """Keep an uploaded checkpoint under the user's file name, in a temporary folder named by its content."""
    data = upload.getvalue()
    name = Path(upload.name).name if Path(upload.name).name.endswith(".pt") else "uploaded.pt"
    path = Path(tempfile.gettempdir()) / "phisnet-uploads" / hashlib.sha256(data).hexdigest()[:16] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_bytes(data)
    return str(path)


def model_sidebar():
    """Model choice in the sidebar (kept across pages); returns (label, path, predictor) or stops the page."""
    models = available_models()
    if not models:
        st.error("No model found in pretrained/; train one on the Train page or with train.py (see the README).")
        st.stop()
    labels = list(models)
    current = st.session_state.get(MODEL_KEY)
    index = labels.index(current) if current in labels else 0
    label = st.sidebar.selectbox("Model", labels, index=index)
    if current in labels and label != current:  # the user picked this model: no automatic switching after this
        st.session_state[PINNED_KEY] = True
    st.session_state[MODEL_KEY] = label
    try:
        predictor = cached_model(models[label])
    except InputError as exc:
        st.error(f"Cannot load {label}: {exc}")
        st.stop()
    meta = predictor.metadata
    validation = validation_h_mae(meta)
    accuracy = f"; validation H MAE {validation:.0f} uHa" if validation is not None else ""
    st.sidebar.caption(
        f"{predictor.info.xc.upper()}/{predictor.info.basis}, {training_data(predictor)}; "
        f"elements {', '.join(ase.data.chemical_symbols[z] for z in predictor.elements)}{accuracy}"
    )
    return label, models[label], predictor


def training_data(predictor) -> str:
    """What the model trained on, for the sidebar: "trained on 1826 ethanol structures (30 validation, 50 test)".

    Counts the training split plus every ``--extra-train`` structure; the dataset's own size alone would count its
    validation and test structures and miss the extra ones. Checkpoints without stored split sizes give the dataset's.
    """
    splits, molecules = predictor.info.splits or {}, predictor.info.molecules
    what = (
        f"structures of {len(molecules['seen'])} molecules"
        if molecules
        else f"{trained_molecule(predictor)} structures"
    )
    held_out = []
    if molecules:
        n_held = len(molecules["held_out"])
        held_out.append(f"{n_held} more molecule{'s' if n_held != 1 else ''} held out")
    if not all(isinstance(splits.get(k), int) for k in ("train", "val", "test")):
        n_train, notes = predictor.info.n_structures or "?", held_out
    else:
        n_train = splits["train"] + predictor.info.n_extra_structures
        notes = [f"{splits['val']} validation, {splits['test']} test", *held_out]
    text = f"trained on {n_train} {what}" + (f" ({'; '.join(notes)})" if notes else "")
    if predictor.info.beyond_scf:
        text += ", then on CCSD(T) energies and forces of part of them"
    return text


def card_sections(text: str) -> list[tuple[str, str]]:
    """A model card's markdown cut at its ``## `` headings: [(title, body)], the text before the first as "Summary".

    Headings inside fenced code blocks (a printed table, a shell comment) do not cut. Deeper headings (``###``)
    stay in their section. Empty sections are dropped; a card without ``## `` headings is one "Summary".
    """
    sections: list[tuple[str, list[str]]] = [("Summary", [])]
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        else:
            sections[-1][1].append(line)
    return [(title, "\n".join(lines).strip()) for title, lines in sections if "\n".join(lines).strip()]


def validation_h_mae(meta: dict) -> float | None:
    """Validation H MAE (uHa) of a checkpoint's weights: recorded with them, or, in checkpoints picked by it
    alone (and older ones), as the best value; None for a checkpoint picked by another number without it."""
    training = meta.get("training") or {}
    return (training.get("validation") or {}).get("val_H_MAE_uHa", training.get("best_val_H_MAE_uHa"))


def elements_known() -> str:
    """One sentence: the elements the available models know between them."""
    from ase.data import chemical_symbols

    known = set()
    for path in available_models().values():
        try:
            known |= set(cached_model(path).elements)
        except InputError:
            continue
    return f"between them the models know {', '.join(chemical_symbols[z] for z in sorted(known))}."


def models_for(atoms: ase.Atoms, exclude: str = "") -> list[str]:
    """Labels of the available models that accept every element of ``atoms``, best first: a model trained on
    this very composition, then models trained on a molecule set (the general model), then the rest."""
    want = sorted(atoms.get_chemical_symbols())
    ranked = []
    for label, path in available_models().items():
        if label == exclude:
            continue
        try:
            predictor = cached_model(path)
        except InputError:
            continue
        if not set(atoms.numbers.tolist()) <= set(predictor.elements):
            continue
        symbols = predictor.info.data_settings.get("symbols")
        rank = 0 if symbols and sorted(symbols) == want else 1 if predictor.info.is_set_model else 2
        ranked.append((rank, label))
    return [label for _, label in sorted(ranked)]


def use_model(label: str, pinned: bool) -> None:
    """Make ``label`` the current model on the next run (``pinned``: the user's own choice)."""
    st.session_state[MODEL_KEY] = label
    if pinned:
        st.session_state[PINNED_KEY] = True


def default_model_for(atoms: ase.Atoms, label: str, predictor) -> tuple[str, str] | None:
    """The model the app switches to for a user's own molecule and a note that says why, or None to keep ``label``.

    Nothing changes when the user picked the current model themselves or when it is a general model
    (trained on a molecule set). Otherwise a per-molecule model trained on this molecule predicts it when its
    reliability check says ``ok`` for this geometry; else the general model does, unless the per-molecule
    model's verdict is better still.
    """
    if st.session_state.get(PINNED_KEY) or predictor.info.is_set_model:
        return None
    paths = available_models()
    knows_all = set(atoms.numbers.tolist()) <= set(predictor.elements)
    ranked = [label, *models_for(atoms, exclude=label)] if knows_all else models_for(atoms, exclude=label)
    predictors = {m: cached_model(paths[m]) for m in ranked}
    general = [m for m in ranked if predictors[m].info.is_set_model]
    own = [m for m in ranked if m not in general and is_own_molecule(atoms, predictors[m])]
    checked = []
    for m in own:
        result = cached_assessment(geometry_key(atoms), paths[m])
        if result.verdict == "ok":
            return None if m == label else (m, f"the model {m}, trained on this molecule, predicts it")
        checked.append((_rank(result), m, result))
    if general:
        g = general[0]
        if checked and len(atoms) <= AUTO_ASSESS_ATOMS:
            checked.append((_rank(cached_assessment(geometry_key(atoms), paths[g])), g, None))
        else:
            checked.append(((-1, 0.0), g, None))
    if not checked:
        return None
    _, best, _ = min(checked, key=lambda c: c[0])
    if best == label:
        return None
    doubts = "; ".join(f"the {m} model's prediction for this geometry is {r.verdict}" for _, m, r in checked if r)
    why = f"{doubts}, so " if doubts else ""
    return best, f"{why}{'the general model, ' if best in general else 'the model '}{best}, predicts it"


def _rank(result) -> tuple[int, float]:
    """Order of preference of an assessment: the better verdict, then the smaller residual."""
    from phisnet.trust import VERDICTS

    return VERDICTS.index(result.verdict), result.gradient_rms


def is_own_molecule(atoms: ase.Atoms, predictor) -> bool:
    """Whether a per-molecule model was trained on this molecule (same formula and bonds)."""
    return is_paper_molecule(atoms, trained_molecule(predictor))


def trained_molecule(predictor) -> str:
    return predictor.info.molecule


def want_reference(atoms: ase.Atoms, predictor=None) -> bool:
    """Sidebar switch for PySCF references: on by default for molecules of up to AUTO_REFERENCE_ATOMS atoms;
    once the user flips it, their choice holds for every molecule and page, except that a calculation estimated
    to take over ASK_REFERENCE_SECONDS runs only after a click for that very molecule."""
    # A keyed switch set from the stored choice on every run (pages render it afresh); only a flip by the user
    # stores a choice (on_change), the size default never does.
    st.session_state[REFERENCE_TOGGLE_KEY] = st.session_state.get(REFERENCE_KEY, len(atoms) <= AUTO_REFERENCE_ATOMS)
    value = st.sidebar.toggle(
        "PySCF reference",
        key=REFERENCE_TOGGLE_KEY,
        on_change=lambda: st.session_state.update({REFERENCE_KEY: st.session_state[REFERENCE_TOGGLE_KEY]}),
        help=f"Run the DFT calculation (cached) to compare. On by default up to {AUTO_REFERENCE_ATOMS} atoms.",
    )
    if not value:
        return False
    seconds = reference_estimate(atoms, predictor)
    confirmed = st.session_state.setdefault("phisnet_long_references", set())
    if seconds <= ASK_REFERENCE_SECONDS or geometry_key(atoms) in confirmed:
        return True
    st.sidebar.caption(
        f"The PySCF calculation of this molecule would take about {format_duration(seconds)} here, during which "
        "a progress bar shows its iterations and Stop at the top right cancels it (kept for this geometry)."
    )
    if st.sidebar.button(f"Run it (about {format_duration(seconds)})"):
        confirmed.add(geometry_key(atoms))
        return True
    return False


def reference_estimate(atoms: ase.Atoms, predictor=None) -> float:
    from phisnet.reference import estimate_scf_seconds

    info = predictor.info if predictor is not None else ModelInfo()
    return estimate_scf_seconds(atoms, info.basis, info.xc)


def format_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} minutes"


# ----------------------------------------------------------------------------- molecules


def remember_molecule(atoms: ase.Atoms, label: str) -> None:
    st.session_state[MOLECULE_KEY] = {
        "symbols": tuple(atoms.get_chemical_symbols()),
        "positions": tuple(map(tuple, atoms.positions.tolist())),
        "charge": int(atoms.info.get("charge", 0)),
        "label": label,
    }


def current_molecule(predictor) -> tuple[ase.Atoms, str]:
    """The molecule chosen on the home page, or the model's own molecule; stops the page if the model refuses it."""
    stored = st.session_state.get(MOLECULE_KEY)
    if stored is None:
        name = trained_molecule(predictor)
        source = name if name in PAPER_MOLECULES else "water"
        from phisnet.io import read_molecules

        atoms = read_molecules(source)[0]
        remember_molecule(atoms, source)
        stored = st.session_state[MOLECULE_KEY]
    atoms = molecule_from(stored)
    try:
        predictor.check(atoms)
    except InputError as exc:
        st.error(f"{stored['label']}: {exc} Choose another molecule or model on the home page.")
        st.stop()
    return atoms, stored["label"]


def molecule_from(stored: dict) -> ase.Atoms:
    atoms = ase.Atoms(stored["symbols"], positions=stored["positions"])
    atoms.info["charge"] = stored["charge"]
    return atoms


def geometry_key(atoms: ase.Atoms) -> tuple:
    """Hashable description of a geometry, for st.cache_data."""
    return (
        tuple(atoms.get_chemical_symbols()),
        tuple(np.round(atoms.positions, 10).ravel().tolist()),
        int(atoms.info.get("charge", 0)),
    )


def atoms_from_key(key: tuple) -> ase.Atoms:
    symbols, flat, charge = key
    atoms = ase.Atoms(symbols, positions=np.reshape(flat, (-1, 3)))
    atoms.info["charge"] = charge
    return atoms


# ----------------------------------------------------------------------------- cached calculations


#: How many PySCF references the app keeps (the oldest goes first).
MAX_REFERENCES = 64
#: SCF iterations a progress bar expects (a minao start of these molecules takes 10-20).
TYPICAL_SCF_ITERATIONS = 15


@st.cache_resource(show_spinner=False)
def _reference_store() -> dict:
    """PySCF references of this server, by (geometry key, xc, basis, forces). A plain store rather than
    st.cache_data, whose replay of elements drawn inside a cached call would redraw the progress bar."""
    return {}


def reference(key: tuple, xc: str, basis: str, forces: bool = False, progress=None):
    """PySCF at this level, computed once per geometry; ``progress(iteration, energy)`` while it runs."""
    store = _reference_store()
    entry = (key, xc, basis, forces)
    if entry not in store:
        result = run_dft(atoms_from_key(key), xc=xc, basis=basis, charge=key[2], forces=forces, progress=progress)
        while len(store) >= MAX_REFERENCES:
            store.pop(next(iter(store)))
        store[entry] = result
    return store[entry]


@st.cache_data(show_spinner="Energy and forces from the predicted Hamiltonian ...", max_entries=64)
def cached_end_to_end(key: tuple, model_path: str) -> tuple[float, np.ndarray]:
    """End-to-end energy (Hartree) and forces (Hartree/Angstrom) of a model, in float64."""
    from phisnet.end_to_end import predict_energy_and_forces

    return predict_energy_and_forces(cached_model(model_path, double=True), atoms_from_key(key), key[2])


@st.cache_data(show_spinner="Checking the prediction's self-consistency (one PySCF Fock build) ...", max_entries=128)
def cached_assessment(key: tuple, model_path: str):
    from phisnet.trust import assess

    return assess(cached_model(model_path), atoms_from_key(key), charge=key[2])


def assessment(atoms: ase.Atoms, model_path: str):
    """The reliability check of the model's prediction for ``atoms``: computed at once up to AUTO_ASSESS_ATOMS
    atoms or when asked for before; else a button that asks for it, and None until it is pressed."""
    key = (geometry_key(atoms), model_path)
    done = st.session_state.setdefault("phisnet_assessed", set())
    if len(atoms) <= AUTO_ASSESS_ATOMS or key in done or st.button("Check this prediction's reliability"):
        done.add(key)
        return cached_assessment(*key)
    return None


def show_verdict(atoms: ase.Atoms, model_path: str) -> None:
    """The verdict on this prediction, in words, before any number of it (behind a button for large molecules)."""
    result = assessment(atoms, model_path)
    if result is None:
        st.caption(
            f"{len(atoms)} atoms: the reliability check (one PySCF Fock build, seconds or more at this size) runs "
            "when you ask for it."
        )
        return
    text = f"**Reliability: {result.verdict}.** {result.reason} {verdict_detail(result)}"
    {"ok": st.success, "doubtful": st.warning, "unreliable": st.error}[result.verdict](text)


def verdict_detail(result) -> str:
    return (
        f"Orbital gradient of the predicted density {result.gradient_rms * 1e6:.3g} uHa RMS (self-consistent: 0; "
        f"the shipped models' good predictions: under {DOUBTFUL_UHA:.0f})."
    )


def reference_for(atoms: ase.Atoms, predictor):
    """PySCF at the model's level. Forces only for models compared end to end at that level (the
    home page's end-to-end section reuses this calculation); no other page shows forces."""
    info = predictor.info
    forces = info.end_to_end_energy and not info.beyond_scf
    key = geometry_key(atoms)
    if (key, info.xc, info.basis, forces) in _reference_store():
        return reference(key, info.xc, info.basis, forces)
    seconds = format_duration(reference_estimate(atoms, predictor))
    text = f"PySCF is running the SCF (about {seconds} here; kept for this geometry; Stop at the top right cancels)"
    bar = st.progress(0.0, text=f"{text} ...")

    def tick(iteration: int, energy: float) -> None:  # drawing lets Streamlit's Stop end the SCF between iterations
        share = min(iteration / TYPICAL_SCF_ITERATIONS, 0.95)
        bar.progress(share, text=f"{text}: iteration {iteration}, energy {energy:.8f} Ha")

    try:
        result = reference(key, info.xc, info.basis, forces, progress=tick)
    except BaseException:  # stopped: a long calculation asks again rather than restarting on the next click
        st.session_state.get("phisnet_long_references", set()).discard(key)
        raise
    bar.empty()
    return result


@st.cache_data(show_spinner="PySCF is running CCSD(T) with forces (cached for this geometry) ...", max_entries=32)
def ccsd_t_reference(key: tuple, basis: str):
    from phisnet.reference import run_ccsd_t

    return run_ccsd_t(atoms_from_key(key), basis=basis, charge=key[2])


#: CCSD(T) forces scale steeply with size; the app computes them for small molecules only.
MAX_CCSD_T_ATOMS = 6


def end_to_end_reference(atoms: ase.Atoms, predictor) -> tuple[str, float, np.ndarray] | None:
    """(label, energy in Hartree, forces in Hartree/Angstrom) of what a model's end-to-end energy is
    meant to match: CCSD(T) or the model's SCF level; None when CCSD(T) is too costly here."""
    if predictor.info.beyond_scf:
        if len(atoms) > MAX_CCSD_T_ATOMS:
            return None
        result = ccsd_t_reference(geometry_key(atoms), predictor.info.basis)
        return "CCSD(T)", result.energy, result.forces
    result = reference_for(atoms, predictor)
    return predictor.info.xc.upper(), result.energy, result.forces


def reference_labels(atoms: ase.Atoms, predictor) -> list[str]:
    """PySCF's AO labels of the molecule in the model's basis."""
    from phisnet.reference import build_mol

    return build_mol(atoms, basis=predictor.info.basis).ao_labels()
