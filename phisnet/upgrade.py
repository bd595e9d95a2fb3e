"""Checkpoint surgery: give a trained model parts it was made without, as the same function.

    phisnet upgrade OLD.pt --add-pair-mixing --add-fine-radial 32 --widen-channels 64 --out NEW.pt
    phisnet train --init NEW.pt --data ...        # then a plain fine-tune

Every part starts so that the upgraded model predicts what the old one did (identity maps, zero output layers,
copied channels; ``with_options`` and ``widened`` below say how), so training continues from
the old model instead of starting over. Two changes of how S is made are not here: ``--exact-overlap`` and
``--add-two-center-overlap`` stay with ``phisnet train --init`` (the second fits the new S to the data first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from e3nn import o3
from torch import nn

from phisnet.checkpoint import build_from_checkpoint, read_checkpoint, save_checkpoint
from phisnet.config import PhiSNetConfig, check_fine_radial
from phisnet.errors import InputError
from phisnet.layers import ElementPairRadial
from phisnet.model import PhiSNet, build_model
from phisnet.tensor_product import ChannelwiseTensorProduct

# The flags that used to be train.py's (phisnet upgrade's own, defined in phisnet.commands.upgrade); train.py,
# given one, names the command to use instead.
UPGRADE_FLAGS = (
    "--add-pair-mixing",
    "--add-pair-radial-scalars",
    "--add-fine-radial",
    "--add-fine-radial-interactions",
    "--add-interactions",
    "--widen-channels",
)


#: The modules that each optional part of PhiSNetConfig adds, by option name (what with_options can add): the last
#: component of their names (the interaction layers' radial_fine sits once in every layer).
OPTIONAL_PARTS = {
    "pair_mixing": "mix",
    "pair_radial_scalars": "pair_radial_scalars",
    "fine_radial": "pair_radial_fine",
    "fine_radial_interactions": "radial_fine",
    "two_center_overlap": "overlap_radial",
}


def optional_modules(model: PhiSNet, option: str) -> dict[str, nn.Module]:
    """The modules of ``model`` that the optional part ``option`` (a key of OPTIONAL_PARTS) adds, by name."""
    return {name: m for name, m in model.named_modules() if name.split(".")[-1] == OPTIONAL_PARTS[option]}


def with_options(
    model: PhiSNet,
    pair_mixing: bool = False,
    pair_radial_scalars: bool = False,
    fine_radial: int = 0,
    fine_radial_interactions: bool = False,
    two_center_overlap: bool = False,
    add_interactions: int = 0,
    exact_overlap: bool = False,
) -> PhiSNet:
    """The same function with the named parts added where the model lacks them (for fine-tuning an older model).

    Pair-mixing maps start as the identity; the scalar-dependent pair radial MLP and the MLPs of ``fine_radial``
    narrow Gaussians (see PhiSNetConfig; in the pair stage, and with ``fine_radial_interactions`` in every
    interaction layer) start with a zero output layer, so they add nothing until training moves them.
    ``add_interactions`` appends that many interaction layers after the last one; each starts as the identity (the
    linear map into its gate is zero, so its residual update is zero) and learns once that map moves.

    ``two_center_overlap`` is the exception: it replaces how S is made, so the S head and its new MLP start
    untrained (fit them with ``phisnet.starting_model.fit_overlap``); H stays exactly the same function.
    ``exact_overlap`` (a model with an integral baseline) drops the S heads: S becomes the baseline's exact overlap
    integral, H stays exactly the same function.
    """
    add = {
        "pair_mixing": pair_mixing and not model.config.pair_mixing,
        "pair_radial_scalars": pair_radial_scalars and not model.config.pair_radial_scalars,
        "fine_radial": fine_radial > 0 and not model.config.fine_radial,
        "fine_radial_interactions": fine_radial_interactions and not model.config.fine_radial_interactions,
        "two_center_overlap": two_center_overlap and not model.config.two_center_overlap,
        "exact_overlap": exact_overlap and not model.config.exact_overlap,
    }
    _check_additions(model, add, add_interactions)
    if not any(add.values()) and not add_interactions:
        return model
    dtype = next(model.parameters()).dtype
    options = {name: True for name, wanted in add.items() if wanted}
    if add["fine_radial"]:
        options["fine_radial"] = fine_radial
    old_layers = model.config.n_interactions
    options["n_interactions"] = old_layers + add_interactions
    upgraded = build_model(PhiSNetConfig.from_json({**model.config.to_json(), **options}), dtype)
    _load_old_weights(upgraded, model, add, old_layers)
    with torch.no_grad():
        _start_as_identity(upgraded, add, old_layers, dtype)
    return upgraded.to(next(model.parameters()).device).train(model.training)


def _check_additions(model: PhiSNet, add: dict, add_interactions: int) -> None:
    if add["exact_overlap"] and not model.config.integral_baseline:
        raise ValueError("exact_overlap takes S from the one-electron baseline's integrals; this model has none.")
    if add["exact_overlap"] and add["two_center_overlap"]:
        raise ValueError("exact_overlap replaces the predicted S: do not also add two_center_overlap.")
    if add_interactions < 0:
        raise ValueError(f"add_interactions must be 0 or more, not {add_interactions}.")
    if add["fine_radial_interactions"] and not (model.config.fine_radial or add["fine_radial"]):
        raise ValueError("fine_radial_interactions needs fine radial Gaussians: give fine_radial as well.")


def _load_old_weights(upgraded: PhiSNet, model: PhiSNet, add: dict, old_layers: int) -> None:
    """Copy every weight of ``model`` into ``upgraded``; what is left unset must be exactly the added parts."""
    state = model.state_dict()
    if add["two_center_overlap"] or add["exact_overlap"]:  # S from a new head, or from the integrals
        dropped = ("heads.s_", "overlap_radial.") if add["exact_overlap"] else ("heads.s_",)
        state = {key: value for key, value in state.items() if not key.startswith(dropped)}
    missing, unexpected = upgraded.load_state_dict(state, strict=False)
    new_prefixes = (
        tuple(
            f"{name}."
            for option, wanted in add.items()
            if wanted and option in OPTIONAL_PARTS
            for name in optional_modules(upgraded, option)
        )
        + (("heads.s_offdiagonal.",) if add["two_center_overlap"] else ())
        + tuple(f"interactions.{i}." for i in range(old_layers, upgraded.config.n_interactions))
    )
    assert not unexpected and all(key.startswith(new_prefixes) for key in missing), (missing, unexpected)


def _start_as_identity(upgraded: PhiSNet, add: dict, old_layers: int, dtype) -> None:
    """Set the added parts so that the upgraded model is the same function (except a new S head)."""
    if add["pair_mixing"]:
        for linear in upgraded.mix.values():
            weights = []
            for ins in linear.instructions:  # e3nn scales each path by path_weight: the identity is I / path_weight
                weights.append(torch.eye(ins.path_shape[0], dtype=dtype).reshape(-1) / ins.path_weight)
            linear.weight.copy_(torch.cat(weights))
    for option in ("pair_radial_scalars", "fine_radial", "fine_radial_interactions"):  # zero output layer: adds 0
        if add[option]:
            for mlp in optional_modules(upgraded, option).values():
                list(mlp.children())[-1].weight.zero_()
    for layer in upgraded.interactions[old_layers:]:  # gate(0) = 0: x + 0, the identity
        layer.update.linear.weight.zero_()


def _widened_index(old_size: int, new_size: int, channels: int) -> torch.Tensor:
    """For each index of a widened axis, the index of the old axis it copies.

    Channel-structured axes hold runs of ``channels`` (one per path, order or gate group); widened k-fold each run
    holds k * channels, and its entry m copies entry m mod channels of the old run. An axis that did not grow (the
    spherical harmonics, the matrix blocks, radial hidden units) maps to itself.
    """
    if new_size == old_size:
        return torch.arange(new_size)
    k = new_size // old_size
    if new_size != k * old_size or old_size % channels:
        raise ValueError(f"an axis of {old_size} entries cannot widen to {new_size} ({channels} channels).")
    m = torch.arange(new_size)
    return (m // (k * channels)) * channels + m % channels


def _spread(old: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, scale: float, noise: float, generator):
    """old[rows][:, cols] * scale / (copies of its row), plus noise that sums to zero over the copies of each row.

    Copies of an input row see equal inputs, so splitting a weight among them, and any noise that cancels among
    them, leaves every output the same; the noise only makes the copies differ so that training can pull them apart.
    """
    copies = torch.bincount(rows, minlength=old.shape[0]).to(old.dtype)
    new = old[rows][:, cols] * (scale / copies[rows])[:, None]
    if noise > 0 and bool((copies > 1).any()):
        eps = torch.randn(new.shape, generator=generator, dtype=old.dtype) * noise * float(old.std())
        mean = torch.zeros(old.shape[0], new.shape[1], dtype=old.dtype).index_add_(0, rows, eps) / copies[:, None]
        new = new + eps - mean[rows]
    return new


def _widen_module(name: str, module, model: PhiSNet, channels: int, noise: float, generator) -> bool:
    """Set the weights of one module of the widened network from the same module of ``model``; False for a
    module without weights of its own to widen."""
    C = model.config.channels
    old = model.get_submodule(name)

    def index(old_size: int, new_size: int) -> torch.Tensor:
        return _widened_index(old_size, new_size, C)

    if isinstance(module, o3.Linear):
        views = zip(old.weight_views(yield_instruction=True), module.weight_views(yield_instruction=True), strict=True)
        for (_, ins_old, w_old), (_, ins_new, w_new) in views:
            rows = index(ins_old.path_shape[0], ins_new.path_shape[0])
            cols = index(ins_old.path_shape[1], ins_new.path_shape[1])
            w_new.copy_(_spread(w_old, rows, cols, ins_old.path_weight / ins_new.path_weight, noise, generator))
        if module.bias.numel():
            raise ValueError("widened maps o3.Linear weights without biases.")
    elif isinstance(module, ChannelwiseTensorProduct) and module.internal_weights:
        module.weight.copy_(old.weight[index(len(old.weight), len(module.weight))])  # [paths, channels]
    elif hasattr(module, "h_in") and hasattr(module, "weight"):  # a layer of e3nn's FullyConnectedNet
        w_old = old.weight
        if name.endswith("pair_radial_scalars.layer0"):  # inputs: radial basis, then both atoms' scalars
            n = model.config.n_radial
            rows = torch.cat([torch.arange(n), n + index(C, channels), n + C + index(C, channels)])
        else:
            rows = index(w_old.shape[0], module.weight.shape[0])
        scale = (module.h_in / old.h_in) ** 0.5  # the layer divides by sqrt(its fan-in)
        cols = index(w_old.shape[1], module.weight.shape[1])
        module.weight.copy_(_spread(w_old, rows, cols, scale, noise, generator))
    elif isinstance(module, (nn.Embedding, ElementPairRadial)):
        module.weight.copy_(old.weight[..., index(old.weight.shape[-1], module.weight.shape[-1])])
    else:
        return False
    return True


def widened(model: PhiSNet, channels: int, noise: float = 0.1, seed: int = 0) -> PhiSNet:
    """The same function with ``channels`` channels per order (a multiple of the model's; for fine-tuning).

    Every channel of the old model becomes k copies (k = channels / old channels): feature copies are equal, a
    layer's weights from a feature are split among its copies (scaled for e3nn's 1/sqrt(fan-in) normalisation) and
    its weights to a feature are repeated. Noise of ``noise`` times each weight matrix's spread, summing to zero over
    the copies of every input, makes the copies' weights differ without changing any output (exactly, up to
    rounding), so that training can make the copies learn different things: a long-trained model grows wider
    without starting over (``phisnet upgrade CHECKPOINT --widen-channels N --out NEW.pt``).
    """
    old_channels = model.config.channels
    if channels == old_channels:
        return model
    if channels < old_channels or channels % old_channels:
        raise InputError(
            f"A model of {old_channels} channels widens to a multiple of them "
            f"(e.g. {2 * old_channels}), not {channels}."
        )
    dtype = next(model.parameters()).dtype
    new = build_model(PhiSNetConfig.from_json({**model.config.to_json(), "channels": channels}), dtype)
    generator = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for name, module in new.named_modules():
            if name and _widen_module(name, module, model, channels, noise, generator):
                done.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
        missing = {p for p, _ in new.named_parameters()} - done
        if missing:
            raise ValueError(f"widened does not know how to widen {sorted(missing)}.")
        fitted = ["h_reference", "s_reference", "h_scale", "s_scale"]
        if model.baseline is not None:
            fitted += ["baseline.onsite", "baseline.offsite"]
        for key in fitted:  # fitted from data, no channel axis
            new.get_buffer(key).copy_(model.get_buffer(key))
    return new.to(next(model.parameters()).device).train(model.training)


@dataclass
class Upgrade:
    """What to add to a model; zero or False leaves that part as it is."""

    pair_mixing: bool = False
    pair_radial_scalars: bool = False
    fine_radial: int = 0
    fine_radial_interactions: bool = False
    interactions: int = 0
    channels: int = 0
    seed: int = 0  # of the noise that makes widened channels' copies differ


def check(upgrade: Upgrade, config: PhiSNetConfig, name: str) -> None:
    """InputError naming the flag at fault when ``upgrade`` cannot apply to a model of ``config`` (file ``name``)."""
    check_fine_radial(upgrade.fine_radial, config.fine_radial_min, config.fine_radial_max)
    if upgrade.interactions < 0:
        raise InputError(f"--add-interactions is a count of new layers, 0 or more; got {upgrade.interactions}.")
    if upgrade.channels < 0:
        raise InputError(f"--widen-channels N widens the model to N channels; got {upgrade.channels}.")
    if upgrade.fine_radial_interactions and not (config.fine_radial or upgrade.fine_radial):
        raise InputError(f"{name} has no fine radial Gaussians; add them with --add-fine-radial N as well.")


def upgraded(model: PhiSNet, upgrade: Upgrade, name: str = "the checkpoint") -> PhiSNet:
    """The model with the parts of ``upgrade`` added where it lacks them (the same function)."""
    check(upgrade, model.config, name)
    model = with_options(
        model,
        upgrade.pair_mixing,
        upgrade.pair_radial_scalars,
        upgrade.fine_radial,
        upgrade.fine_radial_interactions,
        add_interactions=upgrade.interactions,
    )
    if upgrade.channels:
        model = widened(model, upgrade.channels, seed=upgrade.seed)
    return model


def describe(before: PhiSNetConfig, after: PhiSNetConfig) -> list[str]:
    """One sentence per part ``after`` has that ``before`` lacked."""
    same = "the same function as the checkpoint"
    added = {
        "n_interactions": f"{after.n_interactions - before.n_interactions} interaction layer(s) after the "
        f"{before.n_interactions} there (each starting as the identity: {same})",
        "pair_mixing": f"pair-mixing maps (starting as the identity: {same})",
        "pair_radial_scalars": f"the pair radial MLP of atom scalars (starting at zero: {same})",
        "fine_radial": f"the pair radial MLP of {after.fine_radial} narrow Gaussians over "
        f"{after.fine_radial_min}..{after.fine_radial_max} Angstrom (starting at zero)",
        "fine_radial_interactions": "radial MLPs of the fine Gaussians to the interaction layers (starting at zero)",
        "channels": f"channels: {before.channels} -> {after.channels} per order, each old channel copied and its "
        f"weights split with noise that cancels ({same})",
        "exact_overlap": f"S as the baseline's exact overlap integral, the S heads dropped (H {same})",
    }
    # a count grew or a switch went from False to True
    return [f"Added {what}." for name, what in added.items() if getattr(after, name) > getattr(before, name)]


def upgrade_file(path: str | Path, out: str | Path, upgrade: Upgrade) -> list[str]:
    """Write ``out``: the checkpoint ``path`` upgraded, its metadata kept, with a record of what was added.
    Returns the sentences of ``describe``; InputError when nothing would change or ``out`` is ``path``."""
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise InputError(f"--out {out} is the checkpoint itself; write the upgrade to a new file.")
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload)
    before = model.config
    model = upgraded(model, upgrade, path.name)
    messages = describe(before, model.config)
    if not messages:
        raise InputError(f"{path.name} already has every part asked for; nothing to upgrade.")
    metadata = dict(payload["metadata"])
    metadata["upgrades"] = [*metadata.get("upgrades", []), {"from": str(path), "added": messages}]
    save_checkpoint(out, model, metadata)
    return messages
