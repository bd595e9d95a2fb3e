"""Every model: its card, its learning curve and what it was trained on."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

import app_common as ui
from phisnet.checkpoint import ModelInfo, read_checkpoint
from phisnet.jobs import list_jobs
from phisnet.predictor import list_pretrained
from phisnet.run_log import read_metrics
from phisnet.viz import learning_curve_figure, per_molecule_figure

ui.page_setup("Models")


def split_sizes(splits: dict | None) -> str:
    """'450 / 50 / 100 (seed 0)'; a set with held-out molecules adds '+ 18 of unseen molecules' before the seed."""
    if not splits:
        return ""
    text = " / ".join(str(splits.get(name, 0)) for name in ("train", "val", "test"))
    if splits.get("test_ood"):
        text += f" + {splits['test_ood']} of unseen molecules"
    return f"{text} (seed {splits.get('seed', '?')})"


def purpose(card: Path | None) -> str:
    """What a model is for, from its card's title (``# water.pt: water, PBE/def2-SVP`` -> ``water, PBE/def2-SVP``)."""
    if card is None or not card.is_file():
        return "trained in the app"
    title = card.read_text().splitlines()[0].lstrip("# ").strip()
    return title.split(":", 1)[1].strip() if ":" in title else title


@st.cache_data(show_spinner=False)
def summary(path: str, mtime: float) -> dict:
    payload = read_checkpoint(path)
    meta = payload["metadata"]
    splits = meta.get("splits") or {}
    energies = meta.get("energy_target") == "ccsd_t"
    validation = ui.validation_h_mae(meta)
    return {
        "trained on": "CCSD(T) E and F" if energies else "H matrices",
        "training structures": splits.get("train", 0) + ModelInfo.from_metadata(meta).n_extra_structures,
        "validation H MAE / uHa": "(trained on energies)"
        if energies
        else ("" if validation is None else f"{validation:.1f}"),
        "orbital subspace": f"{meta.get('subspace') or 0:g}",
        "MB": f"{Path(path).stat().st_size / 1e6:.1f}",  # text: a table prints floats to 4 places
        "its data: train / val / test": split_sizes(splits),
    }


entries = [
    (p.stem, p, p.with_suffix(".md"), p.with_suffix(".metrics.jsonl")) for p in list_pretrained(ui.ROOT / "pretrained")
]
entries += [(f"trained: {j.name}", j.best, None, j.folder / "metrics.jsonl") for j in list_jobs(ui.JOBS_ROOT) if j.best]
rows = []
for name, path, card, _ in entries:
    try:
        rows.append({"model": name, "for": purpose(card), **summary(str(path), path.stat().st_mtime)})
    except Exception as exc:  # a broken file is listed with its problem, the page goes on
        rows.append({"model": name, "for": f"unreadable: {exc}"})
st.table(pd.DataFrame(rows).fillna(""), hide_index=True)  # a table wraps its cells: every column stays in view
st.caption(
    "Training structures: the training split of its data plus any training-only data (--extra-train). "
    "Orbital subspace: orbitals are solved above this overlap eigenvalue (0: the full problem)."
)

for name, path, card, log in entries:
    with st.expander(name, expanded=name == entries[0][0]):
        left, right = st.columns([3, 2])
        if card is not None and card.is_file():  # long cards read better a section at a time
            sections = ui.card_sections(card.read_text()) or [("Summary", "(empty card)")]
            for tab, (_, body) in zip(left.tabs([title for title, _ in sections]), sections, strict=True):
                tab.markdown(body)
        else:
            left.markdown(f"`{path}`: trained in the app; no model card.")
        if log.is_file():
            metrics = read_metrics(log)
            right.plotly_chart(learning_curve_figure(metrics), width="stretch", key=f"curve-{name}")
        evaluation = Path(path).with_suffix(".evaluation.json")
        if evaluation.is_file():  # written by phisnet evaluate --json (command in the card)
            report = json.loads(evaluation.read_text())
            for entry in report.get("models", [])[:1]:
                split = report.get("split", "?")
                where = "every structure" if split == "all" else f"the {split} split"
                right.markdown(f"**`phisnet evaluate` on {where} of {report.get('data')}**")
                right.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "n": entry.get("n_structures"),
                                "H MAE / uHa": entry.get("H_MAE_uHa"),
                                "eps MAE / uHa": entry.get("eps_MAE_uHa"),
                                "psi / %": entry.get("psi_percent"),
                                "S MAE / 1e-6": entry.get("S_MAE_1e-6"),
                            }
                        ]
                    ),
                    hide_index=True,
                )
                if entry.get("H_MAE_uHa_by_block"):  # phisnet evaluate --blocks: where the error sits
                    right.caption(
                        "H MAE / uHa per kind of atom-pair block (X: on-site blocks of element X; X-Y: between two "
                        "atoms of elements X and Y)"
                    )
                    right.dataframe(pd.DataFrame([entry["H_MAE_uHa_by_block"]]).round(1), hide_index=True)
                if entry.get("by_molecule"):
                    right.plotly_chart(
                        per_molecule_figure(entry["by_molecule"], f"H MAE per molecule ({report.get('split')})"),
                        width="stretch",
                        key=f"molecules-{name}",
                    )
            if "end_to_end" in report:
                right.markdown(f"**End-to-end energies and forces against {report['end_to_end']['target_name']}**")
                if summary(str(path), path.stat().st_mtime)["trained on"] == "H matrices":
                    right.caption(
                        "A model trained on matrices alone: its end-to-end energy is first order in the error of "
                        "its F, so it is far off; use the energy of its predicted density (the card's E column), "
                        "which is second order. Models trained on energies are the ones to use end to end."
                    )
                right.dataframe(
                    pd.DataFrame(report["end_to_end"]["rows"]).rename(
                        columns={
                            "name": "method",
                            "n_structures": "n",
                            "energy_MAE_meV": "E MAE / meV",
                            "energy_mean_error_meV": "mean dE / meV",
                            "energy_MAE_minus_offset_meV": "E MAE - offset / meV",
                            "force_MAE_meV_per_A": "F MAE / (meV/A)",
                        }
                    ),
                    hide_index=True,
                )
