"""phisnet.model: exact equivariance, symmetry, gradients, checkpoints, overfitting."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from tiny import TINY, build64

from phisnet import InputError
from phisnet.basis import layout
from phisnet.checkpoint import save_checkpoint
from phisnet.config import PhiSNetConfig
from phisnet.conventions import ao_rotation
from phisnet.io import read_molecules
from phisnet.model import PhiSNet
from phisnet.predictor import Predictor, auto_threads, load
from phisnet.tensor_product import e3nn_reference, tensor_product_uuu, tensor_product_uvu, uniform_irreps
from phisnet.torchtools import default_dtype


@pytest.fixture(
    scope="module",
    params=[
        {},
        {"two_center_overlap": True},
        {"integral_baseline": True, "baseline_screening": [0.5, 2.0], "exact_overlap": True},
    ],
    ids=["S from features", "two-centre S", "one-electron baseline"],
)
def model64(request):
    """Every optional part on; S from the atom and pair features, or from two-centre features; or H on a baseline."""
    return build64(pair_layers=2, fine_radial=6, fine_radial_interactions=True, **request.param)


def predict(model, atoms):
    out = model(torch.tensor(atoms.positions), torch.tensor(atoms.numbers))
    return out["hamiltonian"].detach().numpy(), out["overlap"].detach().numpy()


def relative(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def invariant_model(model64):
    """model64 with per-element references (and baseline coefficients) fitted to random targets: non-trivial."""
    samples = []
    rng = np.random.default_rng(0)
    for name in ("water", "ethanol"):
        atoms = read_molecules(name)[0]
        nao = layout(atoms).nao
        A = rng.normal(size=(nao, nao))
        samples.append(
            {
                "positions": torch.tensor(atoms.positions),
                "atomic_numbers": torch.tensor(atoms.numbers),
                "hamiltonian": torch.tensor(A + A.T),
                "overlap": torch.tensor(A @ A.T),
            }
        )
    model64.fit_references(samples)
    return model64


@pytest.mark.parametrize("name", ["water", "ethanol", "uracil"])
def test_rotation_and_translation_equivariance(invariant_model, name):
    (atoms,) = read_molecules(name)
    H, S = predict(invariant_model, atoms)
    lay = layout(atoms)
    assert H.shape == S.shape == (lay.nao, lay.nao)
    for R in Rotation.random(2, random_state=1).as_matrix():
        moved = atoms.copy()
        moved.positions = atoms.positions @ R.T + np.array([1.5, -2.0, 0.7])
        H2, S2 = predict(invariant_model, moved)
        D = ao_rotation(lay, R)
        assert relative(H2, D @ H @ D.T) < 1e-10
        assert relative(S2, D @ S @ D.T) < 1e-10


def test_permutation_equivariance(invariant_model):
    (atoms,) = read_molecules("ethanol")
    H, S = predict(invariant_model, atoms)
    perm = np.random.default_rng(2).permutation(len(atoms))
    H2, S2 = predict(invariant_model, atoms[perm])
    lay = layout(atoms)
    ao = np.concatenate([np.arange(lay.atoms[i].start, lay.atoms[i].stop) for i in perm])
    assert relative(H2, H[np.ix_(ao, ao)]) < 1e-10
    assert relative(S2, S[np.ix_(ao, ao)]) < 1e-10


def test_exact_symmetry_and_batching(invariant_model):
    (atoms,) = read_molecules("water")
    pos = torch.tensor(atoms.positions)
    batch = torch.stack([pos, pos + 0.05 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0))])
    out = invariant_model(batch, torch.tensor(atoms.numbers))
    H = out["hamiltonian"].detach()
    assert H.shape == (2, 24, 24)
    assert torch.equal(H, H.transpose(1, 2))
    single = invariant_model(pos, torch.tensor(atoms.numbers))["hamiltonian"].detach()
    assert torch.allclose(single, H[0], atol=1e-12)


def test_molecules_of_different_sizes_in_one_call(invariant_model):
    """A list of compositions goes through one graph and gives what separate calls give."""
    water, ethanol, uracil = (read_molecules(name)[0] for name in ("water", "ethanol", "uracil"))
    two_waters = torch.stack([torch.tensor(water.positions), torch.tensor(water.positions[::-1].copy())])
    numbers = [torch.tensor(water.numbers), torch.tensor(ethanol.numbers), torch.tensor(uracil.numbers)]
    many = invariant_model([two_waters, torch.tensor(ethanol.positions), torch.tensor(uracil.positions)], numbers)
    alone = [
        invariant_model(two_waters, numbers[0]),
        invariant_model(torch.tensor(ethanol.positions)[None], numbers[1]),
        invariant_model(torch.tensor(uracil.positions)[None], numbers[2]),
    ]
    assert [out["hamiltonian"].shape for out in many] == [(2, 24, 24), (1, 72, 72), (1, 132, 132)]
    for together, separately in zip(many, alone, strict=True):
        for key in ("hamiltonian", "overlap"):
            assert torch.allclose(together[key], separately[key], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="list of atomic numbers"):
        invariant_model([two_waters], numbers[0])


@pytest.mark.parametrize("two_center", [False, True])
def test_gradients_reach_every_parameter(two_center):
    options = {"pair_layers": 2, "fine_radial": 6, "fine_radial_interactions": True, "two_center_overlap": two_center}
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **options, **TINY))
    (atoms,) = read_molecules("water")
    out = model(torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    (out["hamiltonian"].square().sum() + out["overlap"].square().sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


@pytest.mark.parametrize("mode", ["uvu", "uuu"])
def test_channelwise_tensor_product_is_e3nns(mode):
    """The batched evaluation equals e3nn's per-path one, with the o3.Linear after it, values and gradients."""
    from e3nn import o3

    with default_dtype(torch.float64):
        torch.manual_seed(1)
        irreps = uniform_irreps(5, 4)
        sh = o3.Irreps([(1, (l, 1)) for l in range(5)])
        tp = tensor_product_uvu(irreps, sh, 4) if mode == "uvu" else tensor_product_uuu(irreps, 4)
        linear = o3.Linear(tp.irreps_out.simplify(), irreps)
    x = torch.randn(7, irreps.dim, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, tp.weight_numel, dtype=torch.float64, requires_grad=True) if mode == "uvu" else None
    reference = tp.forward_e3nn(x, y, weight)
    assert relative(tp(x, y, weight).detach().numpy(), reference.detach().numpy()) < 1e-13
    fused = tp.project(tp.internal(x, y, weight), linear)
    expected = linear(reference)
    assert relative(fused.detach().numpy(), expected.detach().numpy()) < 1e-13
    inputs = [x, y, linear.weight, weight if mode == "uvu" else tp.weight]
    g_fused = torch.autograd.grad(fused.square().sum(), inputs)
    g_e3nn = torch.autograd.grad(expected.square().sum(), inputs)
    for a, b in zip(g_fused, g_e3nn, strict=True):
        assert relative(a.numpy(), b.numpy()) < 1e-12


def test_model_with_batched_products_equals_e3nns_evaluation(invariant_model):
    (atoms,) = read_molecules("ethanol")
    H, S = predict(invariant_model, atoms)
    with e3nn_reference():
        H_ref, S_ref = predict(invariant_model, atoms)
    assert relative(H, H_ref) < 1e-12 and relative(S, S_ref) < 1e-12
    assert np.abs(H).max() > 0


def test_unknown_element_is_refused(tmp_path):
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY))
    save_checkpoint(tmp_path / "m.pt", model, {"elements": [1, 8]})
    predictor = load(tmp_path / "m.pt")
    with pytest.raises(InputError, match="not trained on C; it knows H, O"):
        predictor.predict(read_molecules("ethanol")[0])


def test_save_load_reproduces_outputs_exactly(tmp_path):
    torch.manual_seed(3)
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY)).eval()
    with torch.no_grad():
        model.h_scale.fill_(0.3)
    save_checkpoint(tmp_path / "m.pt", model, {"note": "test"})
    # The same thread count as the direct call below: float32 sums in another order differ in the last bits.
    predictor = load(tmp_path / "m.pt", threads=torch.get_num_threads())
    (atoms,) = read_molecules("water")
    with torch.no_grad():
        expected = model(torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    pred = predictor.predict(atoms)
    np.testing.assert_array_equal(pred.hamiltonian, expected["hamiltonian"].double().numpy())
    np.testing.assert_array_equal(pred.overlap, expected["overlap"].double().numpy())
    assert predictor.metadata == {"note": "test"}


def test_checkpoints_from_before_pair_mixing_load_without_it(tmp_path):
    """A checkpoint whose configuration lacks pair_mixing was built without the mixing maps."""
    torch.manual_seed(4)
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], pair_mixing=False, **TINY)).eval()
    save_checkpoint(tmp_path / "m.pt", model, {})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["config"]["pair_mixing"], payload["config"]["pair_layers"]
    torch.save(payload, tmp_path / "old.pt")
    predictor = load(tmp_path / "old.pt", threads=torch.get_num_threads())  # as the direct call below
    assert not predictor.model.config.pair_mixing and predictor.model.config.pair_layers == 1
    (atoms,) = read_molecules("water")
    with torch.no_grad():
        expected = model(torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    np.testing.assert_array_equal(predictor.predict(atoms).hamiltonian, expected["hamiltonian"].double().numpy())
    assert PhiSNetConfig().pair_mixing  # new models mix


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a PyTorch checkpoint file"), (b"garbage" * 100, "not a PyTorch checkpoint file")],
)
def test_corrupt_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load(path)


def test_truncated_and_foreign_checkpoints(tmp_path):
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY))
    save_checkpoint(tmp_path / "m.pt", model, {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pt is not a PyTorch checkpoint file"):
        load(tmp_path / "cut.pt")
    torch.save({"layer": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # needs unpickling code to load
    with pytest.raises(InputError, match="pickled.pt holds Python objects") as refused:
        load(tmp_path / "pickled.pt")
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 200
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not a phisnet checkpoint"):
        load(tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="no checkpoint file"):
        load(tmp_path / "missing.pt")


def distorted_waters(n: int, scale: float) -> list:
    """n copies of water with Gaussian noise of ``scale`` Angstrom on every coordinate (seed 0)."""
    (water,) = read_molecules("water")
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        atoms = water.copy()
        atoms.positions += rng.normal(scale=scale, size=(3, 3))
        out.append(atoms)
    return out


def test_tiny_model_overfits_a_few_water_geometries():
    """A handful of distorted water geometries with their PySCF matrices; loss must fall well below start."""
    from phisnet.reference import run_dft

    samples = []
    for atoms in distorted_waters(3, 0.05):
        ref = run_dft(atoms, forces=False)
        samples.append(
            {
                "positions": torch.tensor(atoms.positions, dtype=torch.float32),
                "atomic_numbers": torch.tensor(atoms.numbers),
                "hamiltonian": torch.tensor(ref.hamiltonian, dtype=torch.float32),
                "overlap": torch.tensor(ref.overlap, dtype=torch.float32),
            }
        )
    torch.manual_seed(0)
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], channels=8, n_interactions=1, n_radial=8, radial_hidden=16))
    model.fit_references(samples)
    positions = torch.stack([s["positions"] for s in samples])
    H = torch.stack([s["hamiltonian"] for s in samples])
    Z = samples[0]["atomic_numbers"]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)

    def mae():
        return (model(positions, Z)["hamiltonian"] - H).abs().mean()

    start = float(mae().detach())
    for _ in range(150):
        optimizer.zero_grad()
        loss = mae()
        loss.backward()
        optimizer.step()
    assert float(mae().detach()) < 0.2 * start


def test_warm_up_predicts_on_the_models_elements(tmp_path):
    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY))
    save_checkpoint(tmp_path / "m.pt", model, {})
    predictor = load(tmp_path / "m.pt")
    predictor.warm_up()
    (atoms,) = read_molecules("water")
    assert predictor.predict(atoms).seconds > 0


def test_median_seconds_is_a_positive_time():
    from phisnet.io import read_molecules
    from phisnet.predictor import load

    predictor = load("pretrained/water.pt")
    assert 0 < predictor.median_seconds(read_molecules("water")[0], repeat=3) < 60


def test_auto_threads_uses_one_for_small_molecules_and_the_idle_cores_otherwise():
    limit = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert auto_threads(3, cores=4, load=0.0) == 1  # water: a second thread gains nothing
        assert auto_threads(30, cores=4, load=0.2) == 4
        assert auto_threads(30, cores=4, load=2.1) == 2
        assert auto_threads(30, cores=4, load=7.5) == 1  # busy machine: never less than one
        assert auto_threads(30, cores=16, load=0.0) == 4  # never more than torch's own setting
        (water,) = read_molecules("water")
        assert Predictor(build64(), {}).threads_for(water) == 1
        assert Predictor(build64(), {}, threads=3).threads_for(water) == 3
    finally:
        torch.set_num_threads(limit)


@pytest.mark.parametrize("threads", [1, 2, "auto"])
def test_predictions_do_not_depend_on_the_thread_count_and_restore_it(threads):
    model = build64()
    (atoms,) = read_molecules("ethanol")
    reference = Predictor(model, {}, threads=1).predict(atoms)
    limit = torch.get_num_threads()
    prediction = Predictor(model, {}, threads=threads).predict(atoms)
    assert torch.get_num_threads() == limit
    np.testing.assert_allclose(prediction.hamiltonian, reference.hamiltonian, rtol=0, atol=1e-12)
    np.testing.assert_allclose(prediction.overlap, reference.overlap, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threads", [0, -1, 1.5, "two", True])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(InputError, match="threads must be"):
        Predictor(build64(), {}, threads=threads)


@pytest.mark.parametrize(
    "option, options",
    [
        ("pair_mixing", {"pair_mixing": True}),
        ("pair_radial_scalars", {"pair_radial_scalars": True}),
        ("fine_radial", {"fine_radial": 6}),
        ("fine_radial_interactions", {"fine_radial": 6, "fine_radial_interactions": True}),
    ],
)
def test_a_part_added_to_an_older_model_starts_as_the_same_function(option, options):
    from phisnet.upgrade import optional_modules, with_options

    torch.manual_seed(5)
    plain = {**TINY, "n_interactions": 2, "pair_mixing": False, "pair_radial_scalars": False}
    old = PhiSNet(PhiSNetConfig(elements=[1, 6, 8], **plain)).eval()
    upgraded = with_options(old, **options)
    assert getattr(upgraded.config, option) and not getattr(old.config, option)
    (atoms,) = read_molecules("ethanol")
    args = (torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    with torch.no_grad():
        before, after = old(*args), upgraded(*args)
    for key in ("hamiltonian", "overlap"):
        assert torch.allclose(after[key], before[key], rtol=0, atol=1e-6 * float(before[key].abs().max()))
    modules = optional_modules(upgraded, option)
    assert len(modules) == (2 if option == "fine_radial_interactions" else 1)  # one in each interaction layer
    added = [p for module in modules.values() for p in module.parameters()]
    assert added
    # The added part is trainable: one gradient step changes the output.
    loss = upgraded(*args)["hamiltonian"].square().sum()
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in added)


def test_added_interaction_layers_start_as_the_identity_and_learn():
    from phisnet.upgrade import with_options

    torch.manual_seed(6)
    old = PhiSNet(PhiSNetConfig(elements=[1, 6, 8], **{**TINY, "n_interactions": 1})).eval()
    upgraded = with_options(old, add_interactions=2)
    assert upgraded.config.n_interactions == 3 and len(upgraded.interactions) == 3
    (atoms,) = read_molecules("ethanol")
    args = (torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers))
    with torch.no_grad():
        before, after = old(*args), upgraded(*args)
    for key in ("hamiltonian", "overlap"):
        assert torch.equal(after[key], before[key])
    # The first layer is the old one; the new ones learn: their gate's input map gets a gradient at once.
    assert torch.equal(upgraded.interactions[0].radial[0].weight, old.interactions[0].radial[0].weight)
    upgraded(*args)["hamiltonian"].square().sum().backward()
    for layer in upgraded.interactions[1:]:
        assert float(layer.update.linear.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="0 or more"):
        with_options(old, add_interactions=-1)


@pytest.mark.parametrize("factor", [2, 3])
def test_widened_model_is_the_same_function_with_copies_that_can_part(factor):
    """Widening copies every channel: H and S unchanged to rounding (float64) although the copies' weights differ by
    noise, and one gradient step makes the copies' features differ."""
    from phisnet.upgrade import widened

    torch.manual_seed(7)
    config = {**TINY, "n_interactions": 2, "pair_layers": 2, "fine_radial": 4, "fine_radial_interactions": True}
    with default_dtype(torch.float64):
        old = PhiSNet(PhiSNetConfig(elements=[1, 6, 8], two_center_overlap=True, **config)).train()
        for p in old.parameters():  # weights far from initialisation, as after training
            p.data.normal_()
    (atoms,) = read_molecules("ethanol")
    args = (torch.tensor(atoms.positions, dtype=torch.float64), torch.tensor(atoms.numbers))
    new = widened(old, 4 * factor, noise=0.5)
    assert new.config.channels == 4 * factor and new.training
    with torch.no_grad():
        before, after = old(*args), new(*args)
    for key in ("hamiltonian", "overlap"):
        assert float((after[key] - before[key]).abs().max()) < 1e-10 * float(before[key].abs().max())
    # Channel c + 4 copies channel c: equal features now, different weights (the noise) into the next layer.
    weight = new.interactions[1].self_linear.weight
    x = new.embed_linear(new.embedding(torch.tensor([0, 1, 2])))
    assert torch.allclose(x[:, :4], x[:, 4:8])
    assert not torch.allclose(weight.view(-1)[:4], weight.view(-1)[4 * factor : 4 * factor + 4])
    optimizer = torch.optim.SGD(new.parameters(), lr=1e-3)
    new(*args)["hamiltonian"].square().mean().backward()
    optimizer.step()
    x = new.embed_linear(new.embedding(torch.tensor([0, 1, 2])))
    assert not torch.allclose(x[:, :4], x[:, 4:8])


def test_widened_needs_a_multiple_of_the_channels():
    from phisnet.upgrade import widened

    model = PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY))
    assert widened(model, 4) is model
    for channels in (6, 2):
        with pytest.raises(InputError, match="multiple of them"):
            widened(model, channels)


def test_fine_radial_interactions_need_fine_gaussians():
    from phisnet.upgrade import with_options

    with pytest.raises(ValueError, match="needs fine_radial"):
        PhiSNet(PhiSNetConfig(elements=[1, 8], fine_radial_interactions=True, **TINY))
    with pytest.raises(ValueError, match="give fine_radial as well"):
        with_options(PhiSNet(PhiSNetConfig(elements=[1, 8], **TINY)), fine_radial_interactions=True)


def test_two_center_overlap_is_a_function_of_each_pair_alone():
    """With two_center_overlap, as for the true overlap integrals, the S block of atoms (i, j) depends on their two
    positions only, and an on-site block is the element's reference; H still sees the whole molecule."""
    model = build64(two_center_overlap=True)
    (atoms,) = read_molecules("ethanol")
    lay = layout(atoms)
    A = np.random.default_rng(0).normal(size=(lay.nao, lay.nao))
    sample = {
        "atomic_numbers": torch.tensor(atoms.numbers),
        "hamiltonian": torch.tensor(A + A.T),
        "overlap": torch.tensor(A + A.T),
    }
    model.fit_references([sample])  # non-zero on-site references
    H, S = predict(model, atoms)
    moved = atoms.copy()
    moved.positions[8] += [0.3, -0.2, 0.1]  # an H atom; blocks between the other atoms must not change
    H2, S2 = predict(model, moved)
    rest = np.concatenate([np.arange(lay.atoms[i].start, lay.atoms[i].stop) for i in range(8)])
    assert np.array_equal(S2[np.ix_(rest, rest)], S[np.ix_(rest, rest)])
    assert not np.allclose(S2, S) and not np.allclose(H2[np.ix_(rest, rest)], H[np.ix_(rest, rest)])
    for i, z in enumerate(atoms.numbers):
        e = model.config.elements.index(int(z))
        idx = model.orbitals.element_index[e]
        own = slice(lay.atoms[i].start, lay.atoms[i].stop)
        assert np.array_equal(S[own, own], model.s_reference[e][np.ix_(idx, idx)].numpy())
        assert np.abs(S[own, own]).max() > 0
    # The S-only path gives the same matrix.
    alone = model.overlap(torch.tensor(atoms.positions)[None], torch.tensor(atoms.numbers))[0]
    assert torch.allclose(alone, torch.tensor(S), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="two_center_overlap"):
        build64().overlap(torch.tensor(atoms.positions)[None], torch.tensor(atoms.numbers))


def test_two_center_overlap_added_to_an_older_model_keeps_h_and_fits_s():
    """with_options(two_center_overlap) keeps H exactly and makes S anew; fit_overlap fits it to real PySCF overlaps
    of distorted waters, far below where it starts."""
    from phisnet.reference import build_mol
    from phisnet.starting_model import fit_overlap
    from phisnet.upgrade import with_options

    torch.manual_seed(5)
    old = PhiSNet(PhiSNetConfig(elements=[1, 8], **{**TINY, "channels": 16})).eval()
    samples = []
    for atoms in distorted_waters(24, 0.08):
        S = build_mol(atoms, basis="def2-svp").intor("int1e_ovlp")
        samples.append(
            {
                "positions": torch.tensor(atoms.positions),
                "atomic_numbers": torch.tensor(atoms.numbers),
                "hamiltonian": torch.zeros(24, 24),
                "overlap": torch.tensor(S),
            }
        )
    old.fit_references(samples[:16])
    new = with_options(old, two_center_overlap=True)
    assert new.config.two_center_overlap and "s_diagonal" not in new.heads
    args = (samples[20]["positions"].float(), samples[20]["atomic_numbers"])
    with torch.no_grad():
        assert torch.equal(new(*args)["hamiltonian"], old(*args)["hamiltonian"])
    before, after = fit_overlap(new, samples, list(range(16)), list(range(16, 24)), steps=300, progress=False)
    assert after < before / 200  # 1e-6: about 75000 -> 250 here (16 channels, 300 steps)
    with torch.no_grad():
        assert torch.equal(new(*args)["hamiltonian"], old(*args)["hamiltonian"])


def test_predict_many_equals_predict_frame_by_frame_in_input_order():
    from phisnet.molecules import paper_molecule

    predictor = Predictor(build64(), {})
    rng = np.random.default_rng(0)
    frames = []
    for name in ("water", "ethanol", "water", "water", "ethanol"):  # two compositions, interleaved
        atoms = paper_molecule(name)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    many = predictor.predict_many(frames, batch_size=2)
    assert [p.hamiltonian.shape for p in many] == [(24, 24), (72, 72), (24, 24), (24, 24), (72, 72)]
    for atoms, prediction in zip(frames, many, strict=True):
        single = predictor.predict(atoms)
        np.testing.assert_allclose(prediction.hamiltonian, single.hamiltonian, rtol=0, atol=1e-10)
        np.testing.assert_allclose(prediction.overlap, single.overlap, rtol=0, atol=1e-10)
        assert prediction.seconds > 0
    with pytest.raises(InputError, match="batch_size"):
        predictor.predict_many(frames, batch_size=0)


def test_kept_weight_slices_follow_a_change_of_the_weights():
    """Predictions keep the linear maps' weight slices (ChannelwiseTensorProduct._output_weights) until they change."""
    import copy

    from phisnet.molecules import paper_molecule

    model = build64()
    predictor = Predictor(model, {})
    atoms = paper_molecule("water")
    before = predictor.predict(atoms).hamiltonian
    with torch.no_grad():  # what an optimiser step or load_state_dict does: in place, under no_grad
        for parameter in model.parameters():
            parameter.mul_(1.05)
    after = predictor.predict(atoms).hamiltonian
    fresh = Predictor(copy.deepcopy(model), {}).predict(atoms).hamiltonian
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, fresh, rtol=0, atol=1e-12)
    with e3nn_reference():  # and the kept slices give e3nn's own result
        np.testing.assert_allclose(predictor.predict(atoms).hamiltonian, after, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["water", "ethanol"])
def test_the_fast_path_equals_e3nns_own_evaluation_in_float32(name):
    """Issue 47's accuracy bar: the optimised prediction of a shipped model equals the un-optimised one to 1e-6 Ha."""
    from phisnet.molecules import paper_molecule

    predictor = load(f"pretrained/{name}.pt")
    atoms = paper_molecule(name)
    atoms.positions += np.random.default_rng(3).normal(scale=0.02, size=atoms.positions.shape)
    fast = predictor.predict_many([atoms, atoms], batch_size=2)[1].hamiltonian
    with e3nn_reference():
        reference = predictor.predict(atoms).hamiltonian
    assert np.abs(fast - reference).max() < 1e-6


def test_the_public_api_is_importable_from_phisnet_itself_without_loading_torch_early():
    import subprocess
    import sys

    code = "import sys, phisnet; assert 'torch' not in sys.modules; from phisnet import load, read_molecules, solve"
    subprocess.run([sys.executable, "-c", code + "; print(load, read_molecules, solve)"], check=True)
    import phisnet

    water = phisnet.read_molecules("water")[0]
    predictor = phisnet.load("pretrained/water.pt")
    assert isinstance(predictor, phisnet.Predictor) and predictor.predict(water).hamiltonian.shape == (24, 24)
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        phisnet.lod  # noqa: B018


@pytest.mark.slow
def test_a_compiled_predictor_predicts_what_the_eager_one_does():
    """Predictor.compile (torch.compile of the tensor products' arithmetic) changes no result beyond float32
    rounding, on a geometry after the one it compiled on; uncompile switches back."""
    eager, compiled = load("pretrained/water.pt"), load("pretrained/water.pt").compile()
    assert compiled.compiled and not eager.compiled
    water = read_molecules("water")[0]
    compiled.predict(water)  # compiles
    moved = water.copy()
    moved.positions[0] += 0.05
    expected = eager.predict(moved)
    got = compiled.predict(moved)
    assert np.abs(got.hamiltonian - expected.hamiltonian).max() < 1e-6
    assert np.array_equal(got.overlap, expected.overlap)
    assert not compiled.uncompile().compiled
    assert np.abs(compiled.predict(moved).hamiltonian - expected.hamiltonian).max() < 1e-6


def test_model_info_reads_every_shipped_checkpoint_and_old_defaults():
    from phisnet.checkpoint import ModelInfo

    old = ModelInfo.from_metadata({})  # a checkpoint from before any of these keys
    assert (old.basis, old.xc, old.molecule, old.is_set_model, old.subspace) == ("def2-svp", "pbe", "water", False, 0.0)
    infos = {name: load(f"pretrained/{name}.pt").info for name in ("water", "ethanol", "general", "water-ccsdt")}
    assert infos["ethanol"].molecule == "ethanol" and not infos["ethanol"].is_set_model
    assert infos["general"].is_set_model and infos["general"].molecules["held_out"]
    assert infos["water-ccsdt"].beyond_scf and infos["water-ccsdt"].trained_with_energies
    assert not infos["water"].beyond_scf and not infos["water"].trained_with_energies
    assert all(info.basis == "def2-svp" and info.splits for info in infos.values())
