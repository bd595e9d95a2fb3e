"""phisnet.sampling: normal modes with a fixed sign, so one command makes one dataset."""

import numpy as np

from phisnet.io import read_molecules
from phisnet.sampling import NormalModes, canonical_signs, normal_modes, thermal_sample


def test_normal_modes_have_a_sign_that_does_not_depend_on_the_eigensolver():
    (water,) = read_molecules("water")
    modes = normal_modes(water, xc="hf", basis="sto-3g")
    assert modes.modes.shape == (3, 3, 3)
    # What another run of the eigensolver may return: some modes with the other sign.
    flipped = modes.modes * np.array([-1.0, 1.0, -1.0])[:, None, None]
    np.testing.assert_array_equal(canonical_signs(flipped), modes.modes)
    other = NormalModes(modes.symbols, modes.positions, modes.wavenumbers, modes.force_constants, flipped)
    draws = [thermal_sample(m, 500.0, np.random.default_rng(3)) for m in (modes, other)]
    assert np.abs(draws[0] - draws[1]).max() > 1e-3  # a flipped mode moves the sample ...
    fixed = NormalModes(
        modes.symbols, modes.positions, modes.wavenumbers, modes.force_constants, canonical_signs(flipped)
    )
    np.testing.assert_array_equal(thermal_sample(fixed, 500.0, np.random.default_rng(3)), draws[0])  # ... unless fixed


def test_canonical_signs_ignore_noise_in_near_zero_components():
    rng = np.random.default_rng(0)
    modes = rng.normal(size=(4, 5, 3))
    modes[:, 0, 0] = 1e-12 * rng.choice([-1.0, 1.0], size=4)  # symmetry zeros that come out as +-noise
    fixed = canonical_signs(modes)
    noisy = modes.copy()
    noisy[:, 0, 0] *= -1
    np.testing.assert_array_equal(np.sign(canonical_signs(noisy)[:, 1:]), np.sign(fixed[:, 1:]))
    assert (fixed.reshape(4, -1)[:, 1] > 0).all()  # the first clear component, after the noise, is positive
    np.testing.assert_array_equal(np.abs(fixed), np.abs(modes))
