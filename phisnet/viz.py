"""Files and pictures of a wavefunction: molden, Gaussian cube grids, 3D views, plots.

Molden files (``pyscf.tools.molden``) open in Jmol, Avogadro, IboView, Multiwfn and
most other viewers; cube files (``pyscf.tools.cubegen``) hold an orbital or a density on
a grid (Bohr, as the cube format requires).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from phisnet.errors import InputError
from phisnet.files import write_text_atomic
from phisnet.observables import Orbitals

#: Points per axis of the cube grids (PySCF's default is 80).
DEFAULT_CUBE_POINTS = 80
#: Names of the densities a cube can hold, beside orbitals.
DENSITIES = ("density", "difference")

_ORBITAL = re.compile(r"^(homo|lumo)\s*(?:([+-])\s*(\d+))?$")


def orbital_index(spec: str | int, orbitals: Orbitals) -> int:
    """Zero-based orbital index for ``homo``, ``lumo``, ``homo-1``, ``lumo+2`` or a number counted from 1."""
    n_mo, n_occ = len(orbitals.energies), orbitals.n_occupied
    text = str(spec).strip().lower()
    match = _ORBITAL.match(text)
    if match:
        base = n_occ - 1 if match.group(1) == "homo" else n_occ
        offset = int(match.group(3) or 0) * (-1 if match.group(2) == "-" else 1)
        index = base + offset
    elif text.isdigit():
        index = int(text) - 1
    else:
        raise InputError(f"'{spec}' is not an orbital: use homo, lumo, homo-N, lumo+N or a number from 1 to {n_mo}.")
    if not 0 <= index < n_mo:
        raise InputError(f"orbital '{spec}' does not exist: this molecule has orbitals 1 to {n_mo} (HOMO = {n_occ}).")
    return index


def orbital_label(index: int, orbitals: Orbitals) -> str:
    """``HOMO``, ``LUMO+1``, ... for a zero-based orbital index."""
    homo = orbitals.n_occupied - 1
    if index <= homo:
        return "HOMO" if index == homo else f"HOMO-{homo - index}"
    return "LUMO" if index == homo + 1 else f"LUMO+{index - homo - 1}"


def molden_text(mol, orbitals: Orbitals) -> str:
    """The orbitals (energies, occupations, coefficients) of ``mol`` in molden format."""
    from pyscf.tools import molden

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orbitals.molden"
        molden.from_mo(mol, str(path), orbitals.coefficients, ene=orbitals.energies, occ=orbitals.occupations)
        return path.read_text()


def cube_text(
    mol,
    what: str,
    orbitals: Orbitals,
    reference_density: np.ndarray | None = None,
    points: int = DEFAULT_CUBE_POINTS,
) -> str:
    """A Gaussian cube of an orbital (``homo``, ``lumo+1``, ``7``...), ``density`` or ``difference``.

    ``difference`` is the predicted minus the reference electron density and needs
    ``reference_density`` (the reference density matrix in the same AO basis).
    """
    from pyscf.tools import cubegen

    what = str(what).strip().lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "grid.cube")
        grid = dict(nx=points, ny=points, nz=points)
        if what == "density":
            cubegen.density(mol, path, orbitals.density_matrix, **grid)
        elif what == "difference":
            if reference_density is None:
                raise InputError("the 'difference' cube needs a reference calculation (--reference).")
            cubegen.density(mol, path, orbitals.density_matrix - reference_density, **grid)
        else:
            index = orbital_index(what, orbitals)
            cubegen.orbital(mol, path, orbitals.coefficients[:, index], **grid)
        return Path(path).read_text()


def write_molden(path: str | Path, mol, orbitals: Orbitals) -> Path:
    """Write a molden file atomically; returns its path."""
    write_text_atomic(path, molden_text(mol, orbitals))
    return Path(path)


def write_cube(path: str | Path, mol, what: str, orbitals: Orbitals, **kwargs) -> Path:
    """Write a cube file atomically (see ``cube_text``); returns its path."""
    write_text_atomic(path, cube_text(mol, what, orbitals, **kwargs))
    return Path(path)


# ----------------------------------------------------------------------------- 3D views (py3Dmol)

#: Where the app serves 3Dmol.js (npm package ``3dmol``, copied to static/ by install.sh).
LOCAL_3DMOL = "/app/static/3Dmol-min.js"
POSITIVE_COLOUR, NEGATIVE_COLOUR = "#2166ac", "#b2182b"
#: Force arrows: colour, and the length in Angstrom of the largest force in a view.
FORCE_COLOUR, FORCE_ARROW_ANGSTROM = "#1b7837", 1.5


def xyz_text(atoms) -> str:
    """The molecule as XYZ text (Angstrom)."""
    lines = [str(len(atoms)), atoms.get_chemical_formula()]
    rows = zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    lines += [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in rows]
    return "\n".join(lines) + "\n"


def view_html(
    atoms,
    cubes: list[str | None] | None = None,
    isovalue: float = 0.05,
    signed: bool = True,
    titles: list[str] | None = None,
    width: int = 900,
    height: int = 420,
    js: str = LOCAL_3DMOL,
    forces: list[np.ndarray | None] | None = None,
) -> str:
    """HTML of a 3Dmol.js view of the molecule, one panel per cube (side by side, rotation linked).

    A cube is drawn as isosurfaces: +isovalue (blue) and, when ``signed`` (orbitals,
    difference densities), -isovalue (red). ``cubes=None`` shows the bare molecule.
    ``forces`` (one (n_atoms, 3) array or None per panel) are drawn as arrows on the atoms,
    all panels on one scale: the largest force of any panel is FORCE_ARROW_ANGSTROM long.
    """
    import py3Dmol

    cubes = cubes if cubes else [None]
    if forces:
        cubes = cubes + [None] * (len(forces) - len(cubes))
        largest = max((float(np.linalg.norm(f, axis=1).max()) for f in forces if f is not None), default=0.0)
        force_scale = FORCE_ARROW_ANGSTROM / largest if largest > 0 else 0.0
    view = py3Dmol.view(width=width, height=height, viewergrid=(1, len(cubes)), linked=True, js=js)
    xyz = xyz_text(atoms)
    for k, cube in enumerate(cubes):
        panel = (0, k)
        view.addModel(xyz, "xyz", viewer=panel)
        view.setStyle({"stick": {"radius": 0.12}, "sphere": {"scale": 0.22}}, viewer=panel)
        if cube is not None:
            _add_isosurfaces(view, panel, cube, isovalue, signed)
        if forces and k < len(forces) and forces[k] is not None:
            _add_arrows(view, panel, atoms.positions, forces[k] * force_scale)
        if titles and k < len(titles):
            view.addLabel(
                titles[k],
                {"useScreen": True, "position": {"x": 10, "y": 10}, "backgroundOpacity": 0.0, "fontColor": "black"},
                viewer=panel,
            )
        view.zoomTo(viewer=panel)
        angle, axis = face_on(atoms.positions)
        if angle:
            view.rotate(angle, axis, viewer=panel)
        extent = float(np.ptp(atoms.positions, axis=0).max()) if len(atoms) > 1 else 0.0
        if 0 < extent < SMALL_EXTENT:  # 3Dmol's zoomTo leaves a molecule of a few atoms a dot in the panel
            view.zoom(min(3.0, SMALL_EXTENT / extent), viewer=panel)
    view.setBackgroundColor("white")
    return view._make_html()


def _add_isosurfaces(view, panel, cube: str, isovalue: float, signed: bool) -> None:
    """The cube's +isovalue surface (blue) on a panel and, when ``signed``, its -isovalue one (red)."""
    view.addVolumetricData(cube, "cube", {"isoval": isovalue, "color": POSITIVE_COLOUR, "opacity": 0.85}, viewer=panel)
    if signed:
        view.addVolumetricData(
            cube, "cube", {"isoval": -isovalue, "color": NEGATIVE_COLOUR, "opacity": 0.85}, viewer=panel
        )


def _add_arrows(view, panel, positions: np.ndarray, arrows: np.ndarray) -> None:
    """One arrow per atom on a panel, from its position along its row of ``arrows`` (Angstrom)."""
    for start, arrow in zip(positions, arrows, strict=True):
        view.addArrow(
            {
                "start": dict(zip("xyz", map(float, start), strict=True)),
                "end": dict(zip("xyz", map(float, start + arrow), strict=True)),
                "radius": 0.08,
                "color": FORCE_COLOUR,
            },
            viewer=panel,
        )


#: Molecules narrower than this (Angstrom) are zoomed in beyond 3Dmol's zoomTo.
SMALL_EXTENT = 4.0


def face_on(positions: np.ndarray) -> tuple[float, dict]:
    """The camera rotation (degrees, axis) that looks at a molecule along its thinnest direction.

    3Dmol.js looks down the z axis; a planar molecule in another plane (the paper's water lies in y-z) would be
    seen edge-on. The thinnest direction is the principal axis of least spread of the positions.
    """
    if len(positions) < 3:
        return 0.0, {"x": 0.0, "y": 0.0, "z": 1.0}
    centred = positions - positions.mean(axis=0)
    normal = np.linalg.eigh(centred.T @ centred)[1][:, 0]
    normal = normal if normal[2] >= 0 else -normal
    axis = np.cross(normal, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) < 1e-8:
        return 0.0, {"x": 0.0, "y": 0.0, "z": 1.0}
    angle = float(np.degrees(np.arccos(np.clip(normal[2], -1.0, 1.0))))
    axis = axis / np.linalg.norm(axis)
    return angle, dict(zip("xyz", map(float, axis), strict=True))


# ----------------------------------------------------------------------------- plots (plotly)


def heatmap_figure(matrix: np.ndarray, labels: list[str], title: str, unit: str = "Ha", zmax: float | None = None):
    """A symmetric-colour heatmap of a matrix with AO labels on both axes.

    The colour scale saturates at ``zmax`` (default: the 98th percentile of |entries|, so that
    a few large core entries do not wash out the rest); hovering shows the exact values.
    """
    import plotly.graph_objects as go

    zmax = float(np.percentile(np.abs(matrix), 98)) if zmax is None else zmax
    zmax = zmax if zmax > 0 else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="RdBu_r",
            zmid=0,
            zmin=-zmax,
            zmax=zmax,
            colorbar={"title": {"text": unit}},
            hovertemplate="%{y} | %{x}<br>%{z:.3e}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": 8})
    fig.update_xaxes(tickfont={"size": 8})
    fig.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def levels_figure(predicted: np.ndarray, n_occupied: int, reference: np.ndarray | None = None, window_ev=(-40, 15)):
    """Orbital-energy level diagram (eV): predicted beside reference, occupied solid, virtual dashed."""
    import plotly.graph_objects as go

    from phisnet.reference import HARTREE_EV

    fig = go.Figure()
    columns = [("predicted", predicted, 0.0)] + ([("PySCF reference", reference, 1.5)] if reference is not None else [])
    for name, energies, x0 in columns:
        for k, e in enumerate(np.asarray(energies) * HARTREE_EV):
            if not window_ev[0] <= e <= window_ev[1]:
                continue
            occupied = k < n_occupied
            colour = POSITIVE_COLOUR if occupied else NEGATIVE_COLOUR
            fig.add_trace(
                go.Scatter(
                    x=[x0, x0 + 1],
                    y=[e, e],
                    mode="lines",
                    line={"color": colour, "dash": None if occupied else "dash"},
                    name=name,
                    showlegend=False,
                    hovertemplate=f"{name}, orbital {k + 1}: %{{y:.3f}} eV<extra></extra>",
                )
            )
    fig.update_xaxes(
        tickvals=[x0 + 0.5 for _, _, x0 in columns], ticktext=[name for name, _, _ in columns], range=[-0.3, 2.8]
    )
    fig.update_yaxes(title="orbital energy / eV")
    fig.update_layout(height=480, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Orbital energies")
    return fig


def guess_figures(comparison):
    """Bars of iterations and seconds per guess, and |E - E_final| per SCF cycle on a log scale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = comparison.rows()
    names = [r["guess"] for r in rows]
    colours = [NEGATIVE_COLOUR if n == "predicted" else "#999999" for n in names]
    bars = make_subplots(rows=1, cols=2, subplot_titles=("SCF iterations", "wall time / s (incl. prediction)"))
    bars.add_trace(go.Bar(x=names, y=[r["iterations"] for r in rows], marker_color=colours), row=1, col=1)
    bars.add_trace(go.Bar(x=names, y=[r["seconds"] for r in rows], marker_color=colours), row=1, col=2)
    bars.update_layout(showlegend=False, height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    curves = go.Figure()
    for r in comparison.results:
        errors = np.maximum(comparison.energy_errors(r.guess), 1e-12)
        curves.add_trace(
            go.Scatter(
                x=np.arange(1, len(errors) + 1),
                y=errors,
                mode="lines+markers",
                name=r.guess,
                line={"width": 3, "color": NEGATIVE_COLOUR} if r.guess == "predicted" else {"width": 1.5},
            )
        )
    curves.add_hline(y=comparison.conv_tol, line_dash="dot", annotation_text="tolerance")
    curves.update_yaxes(type="log", title="|E - E_final| / Ha", exponentformat="e")
    curves.update_xaxes(title="SCF cycle")
    curves.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Convergence")
    return bars, curves


def _decade_ticks(values: list[float]) -> dict:
    """Log-axis settings with one tick label per power of ten when the values span more than a decade.

    Over a few decades plotly also labels the 2s and 5s between them, and on a 360-pixel plot those overlap.
    """
    positive = [v for v in values if v > 0]
    if positive and np.log10(max(positive) / min(positive)) > 1:
        return {"dtick": 1}
    return {}


def learning_curve_figure(metrics: list[dict], title: str = "Learning curve"):
    """Validation H MAE (uHa) and training loss against the training step, log scale."""
    import plotly.graph_objects as go

    fig = go.Figure()
    steps, validation = [m["step"] for m in metrics], [m["val_H_MAE_uHa"] for m in metrics]
    fig.add_trace(go.Scatter(x=steps, y=validation, name="validation H MAE / uHa"))
    trained = [m for m in metrics if "train_loss" in m]  # a validation without a step (--max-steps 0) has none
    losses = [m["train_loss"] for m in trained]
    fig.add_trace(go.Scatter(x=[m["step"] for m in trained], y=losses, name="training loss", yaxis="y2"))
    fig.update_layout(
        title=title,
        height=360,
        xaxis={"title": "step"},
        yaxis={"title": "validation H MAE / uHa", "type": "log", **_decade_ticks(validation)},
        yaxis2={
            "title": "training loss",
            "type": "log",
            "overlaying": "y",
            "side": "right",
            "tickformat": ".1g",
            **_decade_ticks(losses),
        },
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def rotation_errors_figure(errors: dict[str, np.ndarray]):
    """Relative equivariance error of H per random rotation, one series per precision, log scale."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in errors.items():
        fig.add_trace(
            go.Scatter(x=np.arange(1, len(values) + 1), y=np.maximum(values, 1e-17), mode="markers", name=name)
        )
    fig.update_yaxes(type="log", title="max |H(Rx) - D H(x) D^T| / max |H|", exponentformat="e")
    fig.update_xaxes(title="random rotation")
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Equivariance error")
    return fig


def per_molecule_figure(by_molecule: dict[str, dict], title: str = "H MAE per molecule"):
    """Bar chart of the H MAE (uHa) of each molecule of a set, from ``phisnet evaluate --by-molecule --json``."""
    import plotly.graph_objects as go

    ranked = sorted(by_molecule.items(), key=lambda item: item[1]["H_MAE_uHa"])
    fig = go.Figure(
        go.Bar(
            x=[name for name, _ in ranked],
            y=[m["H_MAE_uHa"] for _, m in ranked],
            text=[f"n={m['n_structures']}" for _, m in ranked],
            textposition="none",  # the structure count shows on hover
            hovertemplate="%{x}: %{y:.1f} uHa (%{text})<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=360,
        yaxis={"title": "H MAE / uHa", "type": "log"},
        xaxis={"tickangle": -45},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig
