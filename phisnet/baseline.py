"""A one-electron baseline for the Kohn-Sham H: per shell pair, a fitted linear combination of one-electron integrals.

The network then learns H minus this baseline (``PhiSNetConfig.integral_baseline``). The baseline is exactly
equivariant without any learned geometry: the overlap S, kinetic T and nuclear-attraction V_nuc integrals of a
geometry (and, with ``PhiSNetConfig.baseline_screening``, screened attractions W_zeta) are exact PySCF integrals,
which rotate as ``D M D^T`` like H, and each shell-pair block of the baseline is a fixed combination
``c_S S_ab + c_T T_ab + c_V V_ab + sum_zeta c_zeta W_zeta,ab`` (plus ``c_1`` times the identity on an atom's own
blocks of equal l), with one coefficient vector per kind of block: on-site (element, shell a, shell b) or off-site
(element i, shell a, element j, shell b). Permuting atoms permutes blocks, because the kinds depend on elements and
shells alone. The coefficients come from least squares on the training structures (:meth:`OneElectronBaseline.fit`);
a kind of block no training structure holds gets zeros (the network alone predicts it).

Why: the extended-Hueckel picture, H_ij ~ S_ij (H_ii + H_jj) / 2, already carries most of how an off-diagonal block
changes with geometry, and V_nuc adds how each atom's neighbours pull on its orbitals; on ``phisnet generate`` data
this baseline alone is within about 3 mHa (water) to 7 mHa (ethanol) of H. V_nuc is bare, though: in a molecule each
nucleus is screened by its own electrons, so its pull on a neighbour's orbitals is far shorter-ranged than Z/r. The
screened attraction

    W_zeta = -sum_C Z_C <mu| erfc(sqrt(zeta) |r - R_C|) / |r - R_C| |nu>

(nucleus C minus a Gaussian cloud of its charge with exponent zeta, 1/Bohr^2) is that short-ranged part; a few
zeta let the fit shape the screening per kind of block (docs/model.md measures what they give the general model).
All W_zeta come from one PySCF three-centre Coulomb call against unit-charge Gaussians on the nuclei
(``_smeared_attractions``; their gradients from Gaussian nuclei, ``Mole.set_nuc_mod``): about 1 ms for water, 40 ms
for uracil and 0.3 s for 30 atoms, one thread.

Shapes: ``B`` structures of one composition, ``nao`` orbitals, ``E`` elements, ``n_slots`` padded shell slots,
``F`` integral features (3 plus the number of screening exponents).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

#: The integral matrices the baseline always combines, in the order of the coefficients' last axis; the screened
#: attractions W_zeta follow, one per screening exponent, then the identity.
FEATURES = ("overlap", "kinetic", "nuclear")
#: Bytes of integral matrices kept (so training computes each geometry's once): 2 GiB of float64.
CACHE_BYTES = 2 * 1024**3
#: Built PySCF molecules kept per thread, by elements and basis (``_placed``).
TEMPLATES = 8
_templates = threading.local()


def _mol(atomic_numbers: np.ndarray, positions: np.ndarray, basis: str):
    import ase

    from phisnet.reference import build_mol

    # One-electron integrals do not depend on the electrons: any consistent spin lets PySCF build the molecule
    # (an odd electron count, as in Predictor.warm_up's two atoms, or an ion's geometry).
    spin = int(np.sum(atomic_numbers)) % 2
    return build_mol(ase.Atoms(numbers=atomic_numbers, positions=positions), basis=basis, spin=spin)


def _gaussian_nuclei(mol, zeta: float):
    """A copy of ``mol`` whose nuclei are Gaussian charges of exponent zeta (1/Bohr^2): int1e_nuc then gives
    -sum_C Z_C <erf(sqrt(zeta) r_C) / r_C>."""
    smeared = mol.copy()
    for atom in range(smeared.natm):
        smeared.set_nuc_mod(atom, zeta)
    return smeared


def one_electron_integrals(atomic_numbers: np.ndarray, positions: np.ndarray, basis: str, screening=()) -> np.ndarray:
    """S, T, V_nuc and W_zeta (zeta in ``screening``) of one geometry from PySCF: array (F, nao, nao), Hartree.

    positions : (N, 3) Angstrom; PySCF AO order.
    """
    mol, clouds = _placed(atomic_numbers, positions, basis, tuple(float(z) for z in screening))
    nuclear = mol.intor("int1e_nuc")
    screened = [nuclear - smeared for smeared in _smeared_attractions(mol, *clouds)] if clouds else []
    return np.stack([mol.intor("int1e_ovlp"), mol.intor("int1e_kin"), nuclear, *screened])


def _placed(atomic_numbers: np.ndarray, positions: np.ndarray, basis: str, zetas: tuple):
    """This thread's PySCF molecule of these elements and basis, moved to positions, and its charge clouds
    (``_clouds``; None without exponents).

    Built once per thread and moved with ``Mole.set_geom_(inplace=True)``, which only rewrites the coordinates: a
    build took 2.4 / 3.4 / 4.6 ms of water's / ethanol's / uracil's 4 / 17 / 52 ms of integrals (one thread, busy
    machine), a move 0.02 ms. Per thread, because a move changes the molecule for everyone holding it.
    """
    cache = _templates.__dict__.setdefault("molecules", OrderedDict())
    key = (np.asarray(atomic_numbers).tobytes(), basis, zetas)
    if key not in cache:
        mol = _mol(atomic_numbers, positions, basis)
        cache[key] = (mol, _clouds(mol, zetas) if zetas else None)
        while len(cache) > TEMPLATES:
            cache.popitem(last=False)
    cache.move_to_end(key)
    mol, clouds = cache[key]
    mol.set_geom_(np.asarray(positions, dtype=float), unit="Angstrom", inplace=True)
    if clouds is not None:
        clouds[0].set_geom_(mol.atom_coords(), unit="Bohr", inplace=True)
    return mol, clouds


def _clouds(mol, zetas: tuple) -> tuple:
    """A molecule of ghost atoms on mol's nuclei, each with one s Gaussian of every exponent in zetas (1/Bohr^2),
    and the factor per exponent that gives each Gaussian unit charge."""
    from pyscf import gto

    clouds = gto.Mole()
    clouds.atom = [("ghost-H", tuple(mol.atom_coord(atom))) for atom in range(mol.natm)]
    clouds.unit = "Bohr"
    clouds.basis = {"ghost-H": [[0, (zeta, 1.0)] for zeta in zetas]}
    clouds.build(verbose=0)
    # PySCF normalises each function; rescale it to unit charge: (zeta/pi)^(3/2) at its centre. Every nucleus
    # carries the same functions, so the first one's values at its own centre serve all.
    at_centre = clouds.eval_gto("GTOval_sph", clouds.atom_coords()[:1])[0, : len(zetas)]  # [zetas]
    return clouds, (np.array(zetas) / np.pi) ** 1.5 / at_centre  # [zetas]


def _smeared_attractions(mol, clouds, unit_charge: np.ndarray) -> list[np.ndarray]:
    """-sum_C Z_C <mu| erf(sqrt(zeta) r_C) / r_C |nu> for every zeta: the attraction of Gaussian nuclear charges.

    All of them in one three-centre Coulomb call (``int3c2e``) against a unit-charge s Gaussian of each exponent on
    each nucleus (``clouds`` and ``unit_charge``, from ``_clouds``), rather than one Gaussian-nuclei ``int1e_nuc``
    call per zeta: the same integrals (to 1e-13) in 0.5-0.8 of the time (five exponents, one thread, busy machine:
    water 1.2 against 2.3 ms, uracil 41 against 60, 30 atoms 329 against 414).
    """
    from pyscf import lib
    from pyscf.df import incore

    n = len(unit_charge)
    weights = -mol.atom_charges()[:, None] * unit_charge[None]  # [atoms, zetas]
    packed = incore.aux_e2(mol, clouds, "int3c2e", aosym="s2ij").reshape(-1, mol.natm, n)  # [pairs, atoms, zetas]
    per_zeta = np.einsum("pak,ak->kp", packed, weights)
    return [lib.unpack_tril(v) for v in per_zeta]


def screened_attraction_gradient(atoms, basis: str, screening) -> np.ndarray:
    """dW_zeta / dR_A of every zeta in ``screening`` and atom A: (n_zeta, n_atoms, 3, nao, nao), Hartree/Bohr.

    From PySCF's own core-Hamiltonian derivative (``Gradients.hcore_generator``, which handles Gaussian nuclei
    through ``with_rinv_at_nucleus``): W_zeta = V_point - V_gauss and the kinetic parts cancel.
    """
    from pyscf import grad, scf

    mol = _mol(atoms.numbers, atoms.positions, basis)
    point_of = grad.rhf.Gradients(scf.RHF(mol)).hcore_generator(mol)
    point = np.stack([point_of(atom) for atom in range(mol.natm)])  # once, not once per zeta
    out = np.zeros((len(screening), mol.natm, 3, mol.nao, mol.nao))
    for k, zeta in enumerate(screening):
        smeared = _gaussian_nuclei(mol, zeta)
        gauss = grad.rhf.Gradients(scf.RHF(smeared)).hcore_generator(smeared)
        for atom in range(mol.natm):
            out[k, atom] = point[atom] - gauss(atom)
    return out


class OneElectronBaseline(nn.Module):
    """Baseline blocks from S, T, V_nuc; coefficients in the buffers ``onsite`` and ``offsite``.

    Parameters
    ----------
    element_index : per element, the padded orbital indices its AOs use, in PySCF AO order.
    orbital_slot, orbital_l, orbital_m : per padded orbital, its shell slot, angular momentum and component.
    n_slots : number of padded shell slots.
    basis : AO basis of the integrals.
    screening : exponents zeta (1/Bohr^2) of the screened attractions W_zeta that join S, T and V_nuc.
    """

    def __init__(self, element_index, orbital_slot, orbital_l, orbital_m, n_slots: int, basis: str, screening=()):
        super().__init__()
        E = len(element_index)
        self.basis = basis
        self.screening = tuple(float(zeta) for zeta in screening)
        self.n_features = len(FEATURES) + len(self.screening)
        F = self.n_features
        self.element_index = [list(idx) for idx in element_index]
        self.orbital_slot = np.asarray(orbital_slot)
        self.orbital_l = np.asarray(orbital_l)
        self.orbital_m = np.asarray(orbital_m)
        dtype = torch.get_default_dtype()
        self.register_buffer("onsite", torch.zeros(E, n_slots, n_slots, F + 1, dtype=dtype))
        self.register_buffer("offsite", torch.zeros(E, n_slots, E, n_slots, F, dtype=dtype))
        self._indices: dict[tuple, tuple] = {}
        self._integrals: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    # ------------------------------------------------------------------------- kinds of blocks

    def _kinds(self, elements: torch.Tensor) -> tuple:
        """Per AO pair of a composition (element indices ``elements`` [N]): what picks its coefficients.

        Returns (same atom [nao, nao] bool, e_mu, s_mu, e_nu, s_nu [nao, nao] long, identity pattern [nao, nao]).
        """
        key = tuple(elements.tolist())
        if key not in self._indices:
            atom, element, orbital = [], [], []
            for i, e in enumerate(key):
                for p in self.element_index[e]:
                    atom.append(i)
                    element.append(e)
                    orbital.append(p)
            atom, element, orbital = np.array(atom), np.array(element), np.array(orbital)
            slot, l, m = self.orbital_slot[orbital], self.orbital_l[orbital], self.orbital_m[orbital]
            same = atom[:, None] == atom[None, :]
            identity = same & (l[:, None] == l[None, :]) & (m[:, None] == m[None, :])
            grid = np.broadcast_arrays(element[:, None], slot[:, None], element[None, :], slot[None, :])
            self._indices[key] = (torch.as_tensor(same), *(torch.as_tensor(g.copy()) for g in grid), identity)
        return self._indices[key]

    def coefficients(self, elements: torch.Tensor) -> torch.Tensor:
        """Coefficient of each feature for every AO pair: tensor (F + 1, nao, nao) (S, T, V_nuc, W..., identity)."""
        same, e_mu, s_mu, e_nu, s_nu, identity = self._kinds(elements)
        on = self.onsite[e_mu, s_mu, s_nu]  # [nao, nao, F + 1]; the fit leaves S and T at 0 on-site
        off = self.offsite[e_mu, s_mu, e_nu, s_nu]  # [nao, nao, F]
        off = torch.cat([off, torch.zeros_like(off[..., :1])], dim=-1)
        C = torch.where(same[..., None], on, off)
        C[..., -1] = C[..., -1] * torch.as_tensor(identity, dtype=C.dtype)
        return C.permute(2, 0, 1)

    def forward(self, integrals: torch.Tensor, elements: torch.Tensor, constant: bool = True) -> torch.Tensor:
        """The baseline (B, nao, nao) from integrals (B, F, nao, nao); ``constant=False`` drops the identity term.

        Linear in the integrals, so it also maps their first-order change (for forces: dR . dM/dR).
        """
        C = self.coefficients(elements).to(integrals.dtype)
        F = self.n_features
        H0 = torch.einsum("kij,bkij->bij", C[:F], integrals)
        if constant:
            H0 = H0 + C[F]
        return 0.5 * (H0 + H0.transpose(1, 2))

    # ------------------------------------------------------------------------- integrals of geometries

    def integrals(self, positions: torch.Tensor, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """The integral features of each structure: positions (B, N, 3) Angstrom -> tensor (B, F, nao, nao), float64.

        Computed by PySCF at the positions given (no gradient flows through them) and kept for the most recent
        geometries, up to CACHE_BYTES.
        """
        numbers = atomic_numbers.detach().cpu().numpy()
        out = []
        for pos in positions.detach().cpu().double().numpy():
            key = numbers.tobytes() + pos.tobytes()
            M = self._integrals.get(key)
            if M is None:
                M = one_electron_integrals(numbers, pos, self.basis, self.screening)
                self._integrals[key] = M
                self._cached_bytes += M.nbytes
                while self._cached_bytes > CACHE_BYTES and len(self._integrals) > 1:
                    self._cached_bytes -= self._integrals.popitem(last=False)[1].nbytes
            else:
                self._integrals.move_to_end(key)
            out.append(M)
        return torch.as_tensor(np.stack(out)).to(positions.device)

    def hamiltonian(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, elements: torch.Tensor):
        """The baseline H (B, nao, nao), float64, of structures positions (B, N, 3) of one composition."""
        return self(self.integrals(positions, atomic_numbers), elements)

    # ------------------------------------------------------------------------- fitting

    @torch.no_grad()
    def fit(self, samples, element_indices, only_new: bool = False) -> dict:
        """Least-squares coefficients from samples (dicts with positions, atomic_numbers, hamiltonian).

        ``element_indices`` maps atomic numbers to element indices. Each kind of block gets the coefficients that
        minimise the squared error of its entries over all samples (minimum-norm where features coincide, as
        S and T of an atom's own shells do). With ``only_new`` (a trained model meeting new data), only kinds
        without coefficients yet (never seen) are fitted; the others keep theirs, so the model's H is unchanged
        wherever it was trained. Returns {"kinds": how many kinds of block were fitted}; with ``only_new``, those
        given nonzero coefficients (a kind is known by them: one whose best coefficients are zero, as where H
        vanishes by symmetry, is fitted to zero again each time, which changes nothing and is not counted).
        """
        E, n_slots, F = self.onsite.shape[0], self.onsite.shape[1], self.n_features
        n_off = E * n_slots * E * n_slots
        n_keys = n_off + E * n_slots * n_slots
        normal = np.zeros((n_keys, F + 1, F + 1))
        right = np.zeros((n_keys, F + 1))
        onsite = self.onsite.double().numpy().copy() if only_new else np.zeros(self.onsite.shape)
        offsite = self.offsite.double().numpy().copy() if only_new else np.zeros(self.offsite.shape)
        known = np.concatenate([offsite.reshape(-1, F).any(-1), onsite.reshape(-1, F + 1).any(-1)])  # [n_keys]
        for sample in samples:
            elements = element_indices(sample["atomic_numbers"])
            keys = self._block_keys(elements)
            if only_new and known[keys].all():
                continue  # nothing new in this structure: its integrals would only feed kinds that stay
            self._add_normal_equations(sample, elements, keys, normal, right)
        fitted = 0
        diagonal = np.arange(F + 1)
        for key in np.flatnonzero(normal[:, diagonal, diagonal].sum(-1) > 0):
            if only_new and known[key]:
                continue
            c = _least_squares(normal[key], right[key])
            if key >= n_off:
                e, rest = divmod(key - n_off, n_slots * n_slots)
                onsite[e, rest // n_slots, rest % n_slots] = c
            else:
                offsite.reshape(-1, F)[key] = c[:F]
            fitted += not only_new or bool(np.any(c.astype(np.float32)))
        self.onsite.copy_(torch.as_tensor(onsite, dtype=self.onsite.dtype))
        self.offsite.copy_(torch.as_tensor(offsite, dtype=self.offsite.dtype))
        return {"kinds": fitted}

    def _block_keys(self, elements) -> np.ndarray:
        """The kind of block of every (mu, nu) entry, [nao, nao]: off-site kinds first, then on-site ones."""
        E, n_slots = self.onsite.shape[0], self.onsite.shape[1]
        n_off = E * n_slots * E * n_slots
        same, e_mu, s_mu, e_nu, s_nu, _ = (np.asarray(t) for t in self._kinds(elements))
        on_key = n_off + (e_mu * n_slots + s_mu) * n_slots + s_nu
        return np.where(same, on_key, ((e_mu * n_slots + s_mu) * E + e_nu) * n_slots + s_nu)

    def _add_normal_equations(self, sample, elements, keys: np.ndarray, normal: np.ndarray, right: np.ndarray) -> None:
        """Add one structure's X^T X and X^T y, per kind of block (``keys``), to ``normal`` and ``right``."""
        numbers = sample["atomic_numbers"]
        same, *_, identity = (np.asarray(t) for t in self._kinds(elements))
        positions = sample["positions"].to(self.onsite.dtype)  # as the network sees them: one cache entry
        M = self.integrals(positions[None], numbers)[0].numpy()  # [F, nao, nao]
        # On an atom's own blocks S and T are the same for every geometry (the identity term covers them) or
        # zero by symmetry (between shells of different l: rounding noise that a fit would amplify).
        onsite_features = np.ones(self.n_features)
        onsite_features[:2] = 0.0
        M = np.where(same[None], onsite_features[:, None, None] * M, M)
        X = np.concatenate([M, identity[None].astype(float)]).reshape(self.n_features + 1, -1).T  # [nao^2, F + 1]
        y = sample["hamiltonian"].double().numpy().reshape(-1)
        k = keys.reshape(-1)
        # Sums per kind of block: sort the entries by kind once, then add contiguous runs (np.add.at over
        # nao^2 (F + 1)^2 products is far slower).
        order = np.argsort(k, kind="stable")
        k, X, y = k[order], X[order], y[order]
        kinds, starts = np.unique(k, return_index=True)
        normal[kinds] += np.add.reduceat(X[:, :, None] * X[:, None, :], starts, axis=0)
        right[kinds] += np.add.reduceat(X * y[:, None], starts, axis=0)


def _least_squares(normal: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Coefficients solving normal c = right, minimum-norm, columns scaled to unit size for the solve.

    A feature absent from this kind of block (zero on the diagonal) keeps coefficient 0.
    """
    present = np.diag(normal) > 1e-20
    scale = np.sqrt(np.diag(normal)[present])
    A = normal[np.ix_(present, present)] / scale[:, None] / scale[None, :]
    c = np.zeros(len(right))
    c[present] = np.linalg.lstsq(A, right[present] / scale, rcond=1e-10)[0] / scale
    return c
