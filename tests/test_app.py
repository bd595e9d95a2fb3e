"""The Streamlit home page, through Streamlit's AppTest."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_home_page_predicts_water_by_default():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "H2O: 3 atoms, 24 orbitals, 10 electrons" in at.subheader[0].value
    assert float(at.metric[0].value) > 0  # prediction time in ms


def test_reference_comparison_runs_pyscf():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.checkbox[0].check().run()
    assert not at.exception
    assert float(at.metric[4].value) > 0  # PySCF time
    assert "reference energy / Hartree" in at.dataframe[0].value.columns


def test_bad_smiles_shows_an_error():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.radio[0].set_value("SMILES").run()
    at.text_input[0].set_value("C1CC(").run()
    assert not at.exception
    assert "not a valid SMILES" in at.error[0].value


def test_element_the_model_does_not_know_shows_an_error():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.radio[0].set_value("SMILES").run()
    at.text_input[0].set_value("CCO").run()
    assert not at.exception
    assert "not trained on C" in at.error[0].value
