"""phisnet.traced: a recorded network predicts what the network predicts op by op, for new geometries too."""

import copy

import numpy as np
import pytest
import tiny
import torch

from phisnet.model import PhiSNet
from phisnet.molecules import paper_molecule
from phisnet.predictor import Predictor, load
from phisnet.tensor_product import e3nn_reference


def build64(**options) -> PhiSNet:
    return tiny.build64(elements=(1, 6, 8), **options)


def geometries(name: str, n: int, seed: int = 0) -> list:
    frames = [paper_molecule(name) for _ in range(n)]
    for k, atoms in enumerate(frames):  # ASE's Gaussian displacements, 0.05 A, a seed per frame
        atoms.rattle(stdev=0.05, seed=1000 * seed + k)
    return frames


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"two_center_overlap": True, "pair_mixing": True, "pair_layers": 2},
        {"integral_baseline": True, "baseline_screening": [0.5, 2.0], "exact_overlap": True, "fine_radial": 8},
    ],
    ids=["S from features", "two-centre S, pair layers", "baseline, exact S, fine radial"],
)
def test_a_recorded_network_predicts_new_geometries_as_the_network_does(options):
    traced = Predictor(build64(**options), {}).trace(record_after=2)
    plain = Predictor(build64(**options), {}, trace=False)
    frames = geometries("ethanol", 4)
    traced.predict(frames[0])
    assert len(traced.model.traced) == 0  # the first prediction of a composition runs op by op
    for atoms in frames:  # the second records the graph; the others run through it, at geometries it never saw
        got, expected = traced.predict(atoms), plain.predict(atoms)
        np.testing.assert_allclose(got.hamiltonian, expected.hamiltonian, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.overlap, expected.overlap, rtol=0, atol=1e-12)
    assert len(traced.model.traced) == 1 and not plain.traced


def test_changed_weights_are_recorded_afresh_and_grad_runs_op_by_op():
    model = build64()
    predictor = Predictor(model, {}).trace(record_after=2)
    frames = geometries("water", 3)
    for atoms in frames:
        predictor.predict(atoms)
    before = predictor.predict(frames[2]).hamiltonian
    with torch.no_grad():  # an optimiser step or load_state_dict: in place
        for parameter in model.parameters():
            parameter.mul_(1.05)
    after = [predictor.predict(atoms).hamiltonian for atoms in frames]  # first op by op, then a new graph
    fresh = Predictor(copy.deepcopy(model), {}, trace=False)
    assert np.abs(after[2] - before).max() > 1e-6
    for atoms, H in zip(frames, after, strict=True):
        np.testing.assert_allclose(H, fresh.predict(atoms).hamiltonian, rtol=0, atol=1e-12)
    positions = torch.as_tensor(frames[0].positions, dtype=torch.float64).requires_grad_()
    H = model(positions, torch.as_tensor(frames[0].numbers))["hamiltonian"]
    assert H.requires_grad  # with autograd on, the graph is not used (it holds no gradients)
    with e3nn_reference():  # e3nn's own evaluation is never replaced by a recorded graph
        np.testing.assert_allclose(predictor.predict(frames[0]).hamiltonian, after[0], rtol=0, atol=1e-10)


def test_batches_of_one_composition_run_through_their_own_graphs():
    predictor, plain = Predictor(build64(), {}).trace(record_after=3), Predictor(build64(), {}, trace=False)
    frames = geometries("water", 6)
    many = predictor.predict_many(frames, batch_size=4)  # batches of 4 and 2: a graph each, at 3 structures
    assert len(predictor.model.traced) == 1  # the batch of 4 brought 4 structures at once, the batch of 2 only 2
    many = predictor.predict_many(frames, batch_size=4)
    assert len(predictor.model.traced) == 2
    for prediction, expected in zip(many, plain.predict_many(frames, batch_size=4), strict=True):
        np.testing.assert_allclose(prediction.hamiltonian, expected.hamiltonian, rtol=0, atol=1e-12)
    assert not predictor.untrace().traced and predictor.trace().traced


def test_a_graph_waits_for_its_count_of_predictions_of_one_composition():
    from phisnet.traced import RECORD_AFTER

    assert Predictor(build64(), {}).model.traced.record_after == RECORD_AFTER >= 100
    predictor = Predictor(build64(), {}).trace(record_after=5)
    frames = geometries("water", 3)
    for k in range(4):
        predictor.predict(frames[k % 3])
    assert len(predictor.model.traced) == 0
    predictor.predict(frames[0])
    assert len(predictor.model.traced) == 1


def test_a_shipped_model_recorded_equals_its_op_by_op_prediction_in_float32():
    """Issue 47's accuracy bar: the optimised prediction equals the un-optimised one to 1e-6 Ha in float32."""
    traced, plain = load("pretrained/ethanol.pt").trace(record_after=2), load("pretrained/ethanol.pt", trace=False)
    frames = geometries("ethanol", 3, seed=1)
    for atoms in frames:
        got, expected = traced.predict(atoms), plain.predict(atoms)
        assert np.abs(got.hamiltonian - expected.hamiltonian).max() < 1e-6
        assert np.abs(got.overlap - expected.overlap).max() < 1e-6
    assert len(traced.model.traced) == 1
