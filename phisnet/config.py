"""PhiSNetConfig: the hyperparameters of a PhiSNet, saved in every checkpoint so it can be rebuilt."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from phisnet.basis import DEFAULT_BASIS
from phisnet.errors import InputError


@dataclass
class PhiSNetConfig:
    """Hyperparameters; saved in every checkpoint so the same model can be rebuilt.

    Attributes
    ----------
    elements : atomic numbers the model accepts.
    basis : AO basis of the predicted matrices.
    xc : level of theory of the training data (metadata only).
    channels : multiplicity of every irrep order 0..lmax in atom and pair features.
    lmax : highest irrep order of the features (4 covers d-d shell pairs).
    n_interactions : message-passing layers.
    n_radial : Gaussian radial basis functions.
    cutoff : radial cutoff in Angstrom (all atom pairs get a Hamiltonian block; pairs
        beyond the cutoff exchange no messages).
    radial_hidden : width of the MLPs that turn distances into tensor-product weights.
    pair_mixing : give each side of the channel-wise products (x_i (x) x_j for pairs, x_i (x) x_i
        for diagonal blocks) its own linear map first, so every channel of one atom can meet every
        channel of the other (checkpoints from before the option load with False).
    pair_layers : equivariant layers of the pair stage; each after the first adds
        gate(linear(p_ij (x) Y(r_ij))) with its own radial weights to the pair features p_ij.
    pair_radial_scalars : the radial weights of the pair stage's x_j (x) Y(r_ij) also depend on the
        invariant (L = 0) features of both atoms, so each pair of elements (and environments) gets its own
        radial functions; without it they depend on the distance alone (checkpoints from before the option
        load with False).
    fine_radial : narrow Gaussians (width = spacing) over bonding distances, fine_radial_min..fine_radial_max
        Angstrom, feeding one more MLP of the pair stage's radial weights; 0 = none. The main basis spaces its
        Gaussians cutoff / n_radial apart (0.5 Angstrom by default), coarse against the spread of a bond length.
    fine_radial_min, fine_radial_max : the distances, in Angstrom, that the fine Gaussians cover.
    fine_radial_interactions : the interaction layers' radial weights (which shape the atom features, hence the
        on-site blocks) also get an MLP of the fine Gaussians; needs fine_radial > 0.
    two_center_overlap : predict S the way it is made, as two-centre integrals: the on-site blocks are the
        element's fitted reference (the same for every geometry, as in the basis), and the block of a pair (i, j)
        comes from features w(r_ij, Z_i, Z_j) Y(r_ij) alone (radial weights linear in OVERLAP_RADIAL Gaussians, one
        set per ordered pair of elements, times the spherical harmonics), through the same Clebsch-Gordan head.
        S then no longer draws on the atom and pair features, which serve H alone. Without it S comes from the
        same features as H, like the paper.
    integral_baseline : the network predicts H minus a baseline made of the geometry's exact one-electron integrals
        (``phisnet.baseline``: per kind of shell-pair block a least-squares combination of S, T and V_nuc, fitted to
        the training structures before training); a prediction then computes those integrals with PySCF (milliseconds).
    baseline_screening : exponents zeta (1/Bohr^2) of screened nuclear attractions W_zeta that join S, T and V_nuc in
        the baseline (``phisnet.baseline``: each nucleus minus a Gaussian cloud of its charge, the short-ranged pull of
        a screened atom); empty = none. Needs integral_baseline.
    exact_overlap : S is not predicted but is the exact overlap integral that the baseline computes anyway
        (PySCF's, in the model's basis): the model has no S heads, its S error is rounding, and eps and psi then
        measure H alone. Needs integral_baseline (the paper predicts S because its model calls no quantum-chemistry
        code; a baseline model calls PySCF's one-electron integrals already).
    """

    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])
    basis: str = DEFAULT_BASIS
    xc: str = "pbe"
    channels: int = 16
    lmax: int = 4
    n_interactions: int = 2
    n_radial: int = 16
    cutoff: float = 8.0
    radial_hidden: int = 32
    pair_mixing: bool = True
    pair_layers: int = 1
    pair_radial_scalars: bool = True
    fine_radial: int = 0
    fine_radial_min: float = 0.5
    fine_radial_max: float = 3.0
    fine_radial_interactions: bool = False
    two_center_overlap: bool = False
    integral_baseline: bool = False
    baseline_screening: list[float] = field(default_factory=list)
    exact_overlap: bool = False

    def check(self) -> None:
        """InputError naming the option and its training flag when the options contradict each other."""
        if self.fine_radial_interactions and self.fine_radial < 1:
            raise InputError(
                "fine_radial_interactions needs fine_radial > 0: the Gaussians it feeds the layers "
                "(train.py: give --fine-radial N with --fine-radial-interactions)."
            )
        if self.baseline_screening and not self.integral_baseline:
            raise InputError(
                "baseline_screening needs integral_baseline: the screened attractions join its integrals "
                "(train.py: give --integral-baseline with --baseline-screening)."
            )
        if self.exact_overlap and not self.integral_baseline:
            raise InputError(
                "exact_overlap needs integral_baseline: S comes from the baseline's integrals "
                "(train.py: give --integral-baseline with --exact-overlap)."
            )
        if any(not zeta > 0 for zeta in self.baseline_screening):
            raise InputError(
                f"baseline_screening exponents must be positive (1/Bohr^2; train.py's --baseline-screening), "
                f"got {self.baseline_screening}."
            )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PhiSNetConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def check_fine_radial(count: int, low: float, high: float) -> None:
    """InputError unless ``count`` fine radial Gaussians (0: none) can be spread over ``low``..``high`` Angstrom."""
    if count < 0 or (count and not 0.0 <= low < high):
        raise InputError(
            f"fine radial Gaussians: a count >= 0 over 0 <= min < max Angstrom; got {count} over {low}..{high}."
        )
