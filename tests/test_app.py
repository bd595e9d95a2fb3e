"""The Streamlit home page, through Streamlit's AppTest."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_home_page_runs_with_defaults():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "H2O: 3 atoms, 24 def2-SVP orbitals" in at.subheader[0].value


def test_reference_button_runs_pyscf():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.button[0].click().run()
    assert not at.exception
    assert int(at.metric[1].value) >= 3
    assert float(at.metric[0].value) < -76


def test_bad_smiles_shows_an_error():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio[0].set_value("SMILES").run()
    at.text_input[0].set_value("C1CC(").run()
    assert not at.exception
    assert "not a valid SMILES" in at.error[0].value
