"""phisnet.ao_values: kept orbital values give PySCF's own numbers; run_dft's H is PySCF's Fock matrix."""

import numpy as np
import pytest
from pyscf import dft

from phisnet.ao_values import KeptAONumInt
from phisnet.io import read_molecules
from phisnet.reference import build_mol, run_dft


@pytest.fixture(scope="module")
def water():
    return read_molecules("water")[0]


def _pbe(mol, numint=None, **options):
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    mf.conv_tol = 1e-11
    for name, value in options.items():
        setattr(mf, name, value)
    if numint is not None:
        mf._numint = numint
    mf.kernel()
    return mf


def test_kept_values_give_pyscfs_scf_to_rounding(water):
    """Bitwise on one thread; on several, PySCF's own sums over grid blocks and threads may round differently."""
    mol = build_mol(water)
    plain, kept = _pbe(mol), _pbe(mol, KeptAONumInt())
    assert kept._numint._kept is not None  # the values were kept and served the later iterations
    assert kept.e_tot == pytest.approx(plain.e_tot, abs=1e-11)
    np.testing.assert_allclose(kept.get_fock(), plain.get_fock(), rtol=0, atol=1e-11)


def test_a_new_grid_or_order_replaces_the_kept_values(water):
    mol, ni = build_mol(water), KeptAONumInt()
    grids = dft.gen_grid.Grids(mol)
    grids.build(with_non0tab=True)
    first = [ao.copy() for ao, *_ in ni.block_loop(mol, grids, deriv=1)]
    again = [ao for ao, *_ in ni.block_loop(mol, grids, deriv=1)]
    assert all(a is b[0] for a, b in zip(again, ni._kept[2], strict=True))  # handed back, not evaluated
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    moved = water.copy()
    moved.positions[0, 2] += 0.1
    other = build_mol(moved)
    other_grids = dft.gen_grid.Grids(other)
    other_grids.build(with_non0tab=True)
    fresh = np.concatenate([ao[1].copy() for ao, *_ in dft.numint.NumInt().block_loop(other, other_grids, deriv=1)])
    served = np.concatenate([ao[1] for ao, *_ in ni.block_loop(other, other_grids, deriv=1)])
    np.testing.assert_array_equal(served, fresh)  # the moved molecule's own values, not the kept ones
    assert ni._kept[1][0] is other


def test_second_derivatives_and_grids_over_the_budget_pass_through(water):
    mol = build_mol(water)
    grids = dft.gen_grid.Grids(mol)
    grids.build(with_non0tab=True)
    ni = KeptAONumInt()
    list(ni.block_loop(mol, grids, deriv=2))
    assert ni._kept is None
    small = KeptAONumInt(max_bytes=1000)
    list(small.block_loop(mol, grids, deriv=1))
    assert small._kept is None
    mf = _pbe(mol, KeptAONumInt(max_bytes=1000))
    assert mf.e_tot == pytest.approx(_pbe(mol).e_tot, abs=1e-11)


@pytest.mark.parametrize(("xc", "charge", "spin"), [("pbe", 0, 0), ("pbe", 1, 1), ("hf", 0, 0)])
def test_run_dft_hamiltonian_is_the_fock_matrix_of_its_final_density(water, xc, charge, spin):
    ref = run_dft(water, xc=xc, charge=charge, spin=spin, conv_tol=1e-11, forces=False)
    plain = run_dft(water, xc=xc, charge=charge, spin=spin, conv_tol=1e-11, forces=False, keep_ao=False)
    assert ref.converged and ref.n_iterations == plain.n_iterations
    # PySCF's Fock matrix of the final density, built afresh (the potential of the last iteration was built
    # incrementally from the previous density: equal to rounding)
    mol = build_mol(water, charge=charge, spin=spin)
    mf = dft.RKS(mol) if spin == 0 else dft.ROKS(mol)
    if xc == "hf":
        from pyscf import scf

        mf = scf.RHF(mol)
    else:
        mf.xc = xc
    dm = mf.make_rdm1(ref.mo_coeff, ref.mo_occ)
    np.testing.assert_allclose(ref.hamiltonian, mf.get_fock(dm=dm), atol=1e-10)
    np.testing.assert_allclose(ref.hamiltonian, plain.hamiltonian, atol=1e-10)


def test_second_order_solver_keeps_its_fock_matrix(water):
    ref = run_dft(water, second_order=True, conv_tol=1e-11, forces=False)
    mol = build_mol(water)
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    np.testing.assert_allclose(ref.hamiltonian, mf.get_fock(dm=mf.make_rdm1(ref.mo_coeff, ref.mo_occ)), atol=1e-10)


def test_the_final_fock_matrix_reuses_the_last_potential(water, monkeypatch):
    import phisnet.reference as reference

    built = []
    make_mf = reference.make_mf

    def counting(mol, xc):
        mf = make_mf(mol, xc)
        get_veff = mf.get_veff
        mf.get_veff = lambda *args, **kwargs: built.append(1) or get_veff(*args, **kwargs)
        return mf

    monkeypatch.setattr(reference, "make_mf", counting)
    ref = run_dft(water, conv_tol=1e-11, forces=False)
    assert len(built) == ref.n_iterations + 2  # the guess, every iteration and the check after them: no more


def test_a_calculation_leaves_nothing_alive(water, monkeypatch):
    """The SCF's hooks and kept grid values go with the calculation, without waiting for the cycle collector
    (a dataset generation once grew to 20 GB: each malondialdehyde calculation kept 0.3 GB in a cycle)."""
    import gc
    import weakref

    import phisnet.reference as reference

    made = []
    make_mf = reference.make_mf
    monkeypatch.setattr(reference, "make_mf", lambda mol, xc: made.append(make_mf(mol, xc)) or made[-1])
    gc.disable()
    try:
        run_dft(water, forces=True)
        kept = made.pop()._numint
        assert kept._kept is None
        alive = weakref.ref(kept)
        del kept
        assert alive() is None
    finally:
        gc.enable()
