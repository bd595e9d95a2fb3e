"""The Streamlit app through Streamlit's AppTest: every page with its defaults, and every bad input."""

import json
from pathlib import Path

import ase.build
import pytest
from streamlit.testing.v1 import AppTest

import app_common

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = sorted(str(p) for p in (ROOT / "pages").glob("*.py"))
TIMEOUT = 300


def home(molecule_source="Named molecule", pinned=True):
    """The home page on a molecule source; ``pinned``: the user chose the default model (water) themselves,
    so the app keeps it whatever the molecule (see test_a_users_molecule_goes_to_a_model_that_knows_it)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if pinned:
        at.session_state[app_common.PINNED_KEY] = True
    at.run()
    at.radio(key="molecule_source").set_value(molecule_source).run()
    return at


def errors(at):
    return " ".join(e.value for e in at.error)


def errors_besides_the_verdict(at):
    """Error boxes other than an 'unreliable' verdict (the general model's on a molecule it predicts badly)."""
    return [e.value for e in at.error if not e.value.startswith("**Reliability: unreliable")]


@pytest.fixture(autouse=True)
def jobs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(app_common, "JOBS_ROOT", tmp_path / "jobs")


def test_home_predicts_water_and_compares_with_pyscf():
    at = home()
    assert not at.exception and not at.error
    assert "H2O: 3 atoms, 24 orbitals, 10 electrons" in at.subheader[0].value
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Prediction time / ms"]) > 0
    assert 1.0 < float(metrics["Dipole / D"]) < 3.0
    assert float(metrics["PySCF SCF time / s"]) > 0  # the reference is on by default for small molecules
    assert float(metrics["Occupied orbital energy MAE / meV"]) > 0  # significant digits: a small error is not 0.0
    assert "PySCF / eV" in at.dataframe[0].value.columns


@pytest.mark.parametrize("page", PAGES, ids=lambda p: Path(p).stem)
def test_every_page_runs_with_its_defaults(page):
    at = AppTest.from_file(page, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert not at.error, errors(at)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    name = Path(page).stem.split("_", 1)[1]
    if name == "Hamiltonian":
        assert "H MAE / uHa" in at.dataframe[0].value.columns
    elif name == "Equivariance":
        relative = {m.label: m.value for m in at.metric}["relative to max |H|"]
        assert float(relative) < 1e-5  # float32 model: exact up to rounding
        assert "Largest relative error" in text
    elif name == "SCF_guess":
        assert "all final energies agree" in at.success[-1].value  # after the verdict (success[0] when ok)
    elif name == "Orbitals":
        assert "Blue: positive" in text and "signs are matched to the reference" in text
        headings = [m.value for m in at.markdown]
        assert "**Predicted**" in headings and "**PySCF reference**" in headings  # which panel is which
        at.sidebar.toggle[0].set_value(False).run()  # no reference: one panel, and no claim about signs
        text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
        assert "**PySCF reference**" not in text and "signs are matched" not in text
    elif name == "Models":
        assert "water" in at.table[0].value["model"].tolist()
    elif name == "Train":
        assert "No jobs yet" in at.info[0].value


def test_pages_share_the_molecule_and_refuse_one_the_model_does_not_know():
    at = AppTest.from_file(PAGES[0], default_timeout=TIMEOUT)
    at.session_state[app_common.MOLECULE_KEY] = {
        "symbols": ("C", "O"),
        "positions": ((0, 0, 0), (0, 0, 1.13)),
        "charge": 0,
        "label": "carbon monoxide",
    }
    at.run()
    assert not at.exception
    assert "carbon monoxide" in errors(at) and "not trained on C" in errors(at)


def test_second_session_has_its_own_state():
    first = home("SMILES")
    first.text_input[0].set_value("OO").run()
    assert "H2O2" in first.subheader[0].value
    second = home()
    assert "H2O:" in second.subheader[0].value


@pytest.mark.parametrize(
    "smiles, message",
    [
        ("C1CC(", "not a valid SMILES"),
        ("CCO", "not trained on C"),
        ("[OH]", "odd number"),
        ("O.O", "2 separate molecules"),
    ],
)
def test_bad_smiles_shows_an_error_and_the_app_goes_on(smiles, message):
    at = home("SMILES")
    at.text_input[0].set_value(smiles).run()
    assert not at.exception
    assert message in errors(at)
    at.text_input[0].set_value("O").run()
    assert not at.error and "H2O" in at.subheader[0].value


def test_the_charge_comes_from_the_input_or_the_charge_field():
    at = home("SMILES")
    at.text_input[0].set_value("[OH-]").run()  # hydroxide: the SMILES's formal charge
    assert not at.exception and not errors_besides_the_verdict(at), errors(at)
    assert "HO (-1): 2 atoms" in at.subheader[0].value
    at.text_input[0].set_value("[OH]").run()  # the radical: 9 electrons, refused with the way out named
    assert "odd number" in errors(at) and "charge field" in errors(at)
    at.number_input(key="molecule_charge").set_value(-1).run()
    assert not at.exception and "HO (-1)" in at.subheader[0].value


def test_an_element_no_model_knows_is_said_so():
    at = home("SMILES")
    at.text_input[0].set_value("[Fe]").run()
    assert not at.exception and "not trained on Fe" in errors(at)
    assert "No shipped model knows every element of Fe" in " ".join(i.value for i in at.info)


METHANE = b"5\n\nC 0 0 0\nH 0.63 0.63 0.63\nH -0.63 -0.63 0.63\nH -0.63 0.63 -0.63\nH 0.63 -0.63 -0.63\n"
XYZ_61 = "61\n\n" + "".join(f"H 0 0 {1.0 * k}\n" for k in range(61))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.xyz", b"3\n\nO 0 0 0\nH 0 0 1\n", "bad.xyz: "),
        ("unknown.xyz", b"1\n\nXx 0 0 0\n", "Xx"),
        (
            "methane.xyz",
            b"5\n\nC 0 0 0\nH 0.63 0.63 0.63\nH -0.63 -0.63 0.63\nH -0.63 0.63 -0.63\nH 0.63 -0.63 -0.63\n",
            "not trained on C",
        ),
        ("big.xyz", XYZ_61.encode(), "60"),
        ("huge.xyz", b"#" * (app_common.MAX_MOLECULE_BYTES + 1), "MB"),
        ("noise.pdb", bytes(range(256)) * 4, "noise.pdb: The input is not UTF-8"),
    ],
)
def test_bad_molecule_files_show_an_error(name, content, message):
    at = home("Upload a file")
    at.file_uploader[0].upload(name, content).run()
    assert not at.exception
    assert message.lower() in errors(at).lower(), errors(at)


def test_corrupt_checkpoint_shows_an_error_and_keeps_the_model(tmp_path):
    at = home()
    at.file_uploader[0].upload("broken.pt", b"this is not a checkpoint").run()
    assert not at.exception
    assert "broken.pt is not a PyTorch checkpoint file" in errors(at)  # the user's name, not a temporary one
    assert "H2O: 3 atoms" in at.subheader[0].value  # still predicting with the shipped model


def test_train_page_lists_a_job_and_its_curve(tmp_path):
    from phisnet.jobs import JobSpec, _write_status

    folder = app_common.JOBS_ROOT / "20260101-000000-water"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text('{"molecule": "water", "n_structures": 10, "max_steps": 20}')
    _write_status(folder, "finished", "best.pt is ready")
    (folder / "metrics.jsonl").write_text('{"step": 10, "train_loss": 1.0, "val_H_MAE_uHa": 900.0}\n')
    assert JobSpec(molecule="water").n_structures > 0
    at = AppTest.from_file(str(ROOT / "pages" / "5_Train.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("20260101-000000-water" in m.value and "finished" in m.value for m in at.markdown)


@pytest.mark.parametrize(("model", "target"), [("water-hf", "HF"), ("water-ccsdt", "CCSD(T)")])
def test_home_shows_end_to_end_energy_and_forces(model, target):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[app_common.MODEL_KEY] = model
    at.run()
    at.radio(key="molecule_source").set_value("Named molecule").run()
    assert not at.exception and not at.error, errors(at)
    assert any(f"trained to reproduce {target}" in m.value for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert -77.0 < float(metrics["Energy / Ha"]) < -75.5  # water, HF or CCSD(T) in def2-SVP: about -76.0 to -76.2
    assert float(metrics["Largest force / (eV/A)"]) > 0
    assert f"Energy error vs {target} / meV" in metrics and f"Force MAE vs {target} / (meV/A)" in metrics


def test_models_page_shows_the_transfer_learning_table():
    at = AppTest.from_file(str(ROOT / "pages" / "6_Models.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error, errors(at)
    tables = [" ".join(d.value["method"].tolist()) for d in at.dataframe if "method" in d.value.columns]
    transfer = [methods for methods in tables if "water-ccsdt.pt" in methods]
    assert transfer, f"no transfer-learning table among {tables}"
    assert "HF (PySCF" in transfer[0] and "water-hf.pt" in transfer[0]
    # The paper's metrics of each model that ships an evaluation report, as `phisnet evaluate --json` wrote them.
    report = json.loads((ROOT / "pretrained" / "water.evaluation.json").read_text())
    shown = [d.value["H MAE / uHa"].iloc[0] for d in at.dataframe if "H MAE / uHa" in d.value.columns]
    assert report["models"][0]["H_MAE_uHa"] in shown
    # The summary table gives each model's split sizes as a person reads them, from the checkpoint's metadata.
    summary = at.table[0].value  # a static table, so that no column is cut off
    water = summary.set_index("model").loc["water", "its data: train / val / test"]
    # What each model is for (its card's title), how many structures it trained on, and no "None" anywhere.
    by_model = summary.set_index("model")
    assert by_model.loc["water", "for"] == "water, PBE/def2-SVP"
    assert by_model.loc["water", "training structures"] == 1950  # 450 of its data + 1500 training-only
    assert by_model.loc["water-ccsdt", "validation H MAE / uHa"] == "(trained on energies)"
    assert not summary.astype(str).isin(["None", "nan"]).any().any()
    from phisnet.predictor import load

    splits = load(ROOT / "pretrained" / "water.pt").metadata["splits"]
    assert water == f"{splits['train']} / {splits['val']} / {splits['test']} (seed {splits['seed']})"
    # Each card reads a section at a time: a tab per "## " heading of the card, its text under it.
    labels = [tab.label for tab in at.tabs]
    assert labels.count("Summary") == len(list((ROOT / "pretrained").glob("*.md")))
    assert "Test metrics" in labels and "Training" in labels


def test_card_sections_cut_at_headings_outside_code():
    card = "# Card\nintro\n## Data\n- 600\n```\n## not a heading\n```\n### detail\n## Empty\n\n## Status\nok"
    assert app_common.card_sections(card) == [
        ("Summary", "# Card\nintro"),
        ("Data", "- 600\n```\n## not a heading\n```\n### detail"),
        ("Status", "ok"),
    ]
    assert app_common.card_sections("no headings") == [("Summary", "no headings")]


def general_model() -> str:
    """Label of the shipped model trained on a molecule set."""
    from phisnet.predictor import list_pretrained, load

    return next(p.stem for p in list_pretrained(ROOT / "pretrained") if load(p).metadata.get("molecules"))


def xyz_text(atoms) -> str:
    return f"{len(atoms)}\n\n" + "".join(
        f"{s} {x:.8f} {y:.8f} {z:.8f}\n"
        for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    )


def test_a_users_molecule_goes_to_a_model_that_knows_it():
    at = home("SMILES", pinned=False)
    at.text_input[0].set_value("O").run()  # water: the water model's own molecule stays with it
    assert not at.exception and not at.error, errors(at)
    assert at.session_state[app_common.MODEL_KEY] == "water"
    at.text_input[0].set_value("OCC").run()  # RDKit's gauche ethanol: the MD-trained ethanol model knows it
    assert not at.exception and not at.error, errors(at)
    assert at.session_state[app_common.MODEL_KEY] == "ethanol" and "Reliability: ok" in at.success[0].value

    at = home("Upload a file", pinned=False)  # ethanol near its minimum (ASE's G2 structure): the ethanol model
    at.file_uploader[0].upload("ethanol.xyz", xyz_text(ase.build.molecule("CH3CH2OH")).encode()).run()
    assert not at.exception and not at.error, errors(at)
    assert at.session_state[app_common.MODEL_KEY] == "ethanol" and "Reliability: ok" in at.success[0].value

    stretched = ase.build.molecule("CH3CH2OH")  # C-C pulled to 1.82 A: far outside what ethanol does at 500 K
    stretched.set_distance(0, 1, stretched.get_distance(0, 1) + 0.3, fix=0.5)
    at = home("Upload a file", pinned=False)
    at.file_uploader[0].upload("ethanol.xyz", xyz_text(stretched).encode()).run()
    assert not at.exception and "C2H6O" in at.subheader[0].value
    # Both models are far from self-consistent there; the ethanol model's residual is the smaller, so it stays,
    # and the page says in words, before any number, not to trust it.
    assert at.session_state[app_common.MODEL_KEY] == "ethanol"
    assert "Reliability: unreliable" in errors(at)

    at = home("SMILES", pinned=False)
    at.text_input[0].set_value("CC(N)=O").run()  # acetamide: no model of its own, so the general model
    assert not at.exception and not errors_besides_the_verdict(at), errors(at)
    assert at.session_state[app_common.MODEL_KEY] == general_model()
    assert "the general model" in " ".join(i.value for i in at.info)
    assert "C2H5NO" in at.subheader[0].value
    # Its orbitals come from its subspace (fewer orbitals than functions; the reference, on for 9 atoms, is cut to
    # match), and the page says so.
    from phisnet.predictor import load

    subspace = load(ROOT / "pretrained" / f"{general_model()}.pt").subspace
    captions = " ".join(c.value for c in at.caption)
    if subspace:
        assert at.toggle[0].value is True and f"eigenvectors above {subspace:g}" in captions
    else:
        assert "eigenvectors above" not in captions
    at.text_input[0].set_value("CCO").run()  # the general model is kept once chosen
    assert at.session_state[app_common.MODEL_KEY] == general_model()
    at.selectbox[0].set_value("water").run()  # and so is the user's own choice (H2O2 has water's elements)
    at.text_input[0].set_value("OO").run()
    assert at.session_state[app_common.MODEL_KEY] == "water" and "H2O2" in at.subheader[0].value


def test_an_unreliable_own_model_gives_way_to_a_better_general_one(monkeypatch):
    """The routing rule on its own (no shipped pair of models shows it cheaply): the ethanol model is trained on
    ethanol but unreliable for this geometry, the general model only doubtful, so the general model predicts it."""
    from phisnet.trust import Assessment

    def fake(key, path):
        bad = "ethanol" in Path(path).stem
        return Assessment("unreliable" if bad else "doubtful", "", 1e-2 if bad else 1e-3, 0, 0, 0, 0)

    monkeypatch.setattr(app_common, "cached_assessment", fake)
    monkeypatch.setattr(app_common.st, "session_state", {})
    ethanol = ase.build.molecule("CH3CH2OH")
    paths = app_common.available_models()
    choice = app_common.default_model_for(ethanol, "ethanol", app_common.cached_model(paths["ethanol"]))
    assert choice is not None and choice[0] == general_model()
    assert choice[1].startswith("the ethanol model's prediction for this geometry is unreliable, so the general")


def test_reference_is_on_for_small_molecules_until_the_user_chooses():
    at = home("SMILES", pinned=False)
    at.text_input[0].set_value("CCCCCC").run()  # hexane, 20 atoms: no DFT run unless asked for
    assert not at.exception and not at.error, errors(at)
    assert at.toggle[0].value is False
    at.text_input[0].set_value("O").run()  # water, 3 atoms: the reference runs by default
    assert at.toggle[0].value is True
    at.toggle[0].set_value(False).run()
    at.text_input[0].set_value("C").run()  # methane, 5 atoms: the user's choice holds
    assert at.toggle[0].value is False and not at.exception
    assert "validation H MAE" in " ".join(c.value for c in at.sidebar.caption)


def test_a_long_reference_runs_only_when_asked_for_that_molecule():
    at = home("SMILES", pinned=False)  # caffeine goes to the general model
    at.sidebar.toggle[0].set_value(False).run()
    at.sidebar.toggle[0].set_value(True).run()  # the user wants references (their choice): water's runs at once
    assert not at.exception and "Speed-up" in " ".join(m.label for m in at.metric)
    at.text_input[0].set_value("CN1C=NC2=C1C(=O)N(C(=O)N2C)C").run()  # caffeine: about 2 minutes
    assert not at.exception
    ask = [b for b in at.sidebar.button if b.label.startswith("Run it (about")]
    assert ask and "minutes" in ask[0].label, [b.label for b in at.sidebar.button]
    assert "Speed-up" not in " ".join(m.label for m in at.metric)  # nothing ran behind the user's back


def test_a_refused_molecule_offers_a_model_that_knows_its_elements():
    at = home("SMILES")  # the user chose water: no switch to another model
    at.text_input[0].set_value("CCO").run()
    assert "not trained on C" in errors(at)
    offer = " ".join(i.value for i in at.info)
    assert "Models that know every element of C2H6O: ethanol" in offer  # trained on C2H6O: first
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state[app_common.MODEL_KEY] == "ethanol"
    assert "C2H6O" in at.subheader[0].value
    assert "Reliability: ok" in at.success[0].value  # the MD-trained ethanol model holds on RDKit's gauche ethanol


def test_every_prediction_carries_its_verdict():
    at = home()  # water on the water model
    assert not at.exception and "Reliability: ok" in at.success[0].value
    assert "uHa RMS" in at.success[0].value


def test_validation_h_mae_of_a_checkpoint_picked_by_its_loss_or_its_h_mae():
    picked_by_loss = {"training": {"best_val_loss": 0.004, "validation": {"val_H_MAE_uHa": 296.1}}}
    assert app_common.validation_h_mae(picked_by_loss) == 296.1
    assert app_common.validation_h_mae({"training": {"best_val_H_MAE_uHa": 47.0}}) == 47.0  # older checkpoints
    assert app_common.validation_h_mae({"training": {"best_val_loss": 0.1}}) is None
    assert app_common.validation_h_mae({}) is None


def test_sidebar_counts_the_training_split_and_the_extra_structures():
    from types import SimpleNamespace

    from phisnet.checkpoint import ModelInfo

    def said(metadata):
        return app_common.training_data(SimpleNamespace(metadata=metadata, info=ModelInfo.from_metadata(metadata)))

    data = {"n_structures": 300, "settings": {"molecule": "ethanol"}}
    splits = {"seed": 0, "train": 220, "val": 30, "test": 50}
    extra = [{"n_structures": 1606}, {"n_structures": 10}]
    assert said({"data": data, "splits": splits, "extra_train": extra}) == (
        "trained on 1836 ethanol structures (30 validation, 50 test)"
    )
    assert said({"data": data, "splits": splits}) == "trained on 220 ethanol structures (30 validation, 50 test)"
    assert said({"data": data}) == "trained on 300 ethanol structures"  # no split sizes stored: the dataset's size
    ccsdt = said({"data": data, "splits": splits, "energy_target": "ccsd_t"})
    assert ccsdt.endswith("then on CCSD(T) energies and forces of part of them")
    molecules = {"seen": ["CH4", "H2O"], "held_out": ["NH3"]}
    assert said({"data": data, "splits": {**splits, "test_ood": 2}, "molecules": molecules}) == (
        "trained on 220 structures of 2 molecules (30 validation, 50 test; 1 more molecule held out)"
    )


def test_the_navigation_names_every_page():
    """app.py declares the pages (so the home page is "Predict", not the file name "app"): every file in
    pages/ and the home page are listed, each under its own title and URL path."""
    import ast

    tree = ast.parse((ROOT / "app.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PAGES")
    entries = ast.literal_eval(table)
    files = [file for file, _, _ in entries]
    assert files[0] == "home.py" and entries[0][1] == "Predict"
    assert sorted(files[1:]) == sorted(f"pages/{Path(p).name}" for p in PAGES)
    assert all((ROOT / file).is_file() for file in files)
    assert len({title for _, title, _ in entries}) == len({url for _, _, url in entries}) == len(entries)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[app_common.PINNED_KEY] = True
    at.run()
    assert not at.exception and "phisnet" in [t.value for t in at.title]  # app.py runs the home page
