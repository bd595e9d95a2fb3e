"""phisnet app. Run with: streamlit run app.py

The navigation: the home page (home.py: pick a model and a molecule, see its predicted
wavefunction) and the pages in pages/ that look closer at the same molecule. Declared here
with st.navigation so that each page has a readable name (the file-name default calls the
home page "app").
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
#: (file, navigation title, URL path) of every page, in the order the sidebar lists them.
PAGES = [
    ("home.py", "Predict", ""),
    ("pages/1_Hamiltonian.py", "Hamiltonian", "Hamiltonian"),
    ("pages/2_Orbitals.py", "Orbitals", "Orbitals"),
    ("pages/3_Equivariance.py", "Equivariance", "Equivariance"),
    ("pages/4_SCF_guess.py", "SCF guess", "SCF_guess"),
    ("pages/5_Train.py", "Train", "Train"),
    ("pages/6_Models.py", "Models", "Models"),
]

pages = [
    st.Page(HERE / file, title=title, default=not url, **({"url_path": url} if url else {}))
    for file, title, url in PAGES
]
st.navigation(pages).run()
