"""One split of the dataset a model was trained on, computed again from what its checkpoint records.

Structure i of a generated dataset depends on the dataset's settings and (seed, i) alone (``phisnet.data``,
``phisnet.md``), and a checkpoint records those settings, the dataset's size and the seed and sizes of its split.
So a model's test split can be made again without the rest of its dataset: the 43 test structures of a 343-row
dataset cost what 43 rows cost. A lost ``data/`` folder then costs minutes before a model card's test figures can be
checked, not the days its whole dataset took.

The file records what it is (``metadata["subset"]``); ``phisnet.metrics.model_split`` finds the model's split in it,
and ``--split all`` scores every row of it.

Assumed: the dataset's rows are its first sample indices, none skipped (position p of the dataset is sample index
p). A structure whose SCF failed in the original run would have shifted the later ones; the card's test figure
coming back is the check.
"""

from __future__ import annotations

import os
from pathlib import Path

from phisnet.checkpoint import ModelInfo, read_checkpoint
from phisnet.data import GenerationSettings, generate_rows
from phisnet.dataset import split_indices
from phisnet.errors import InputError

SPLITS = ("train", "val", "test")


def subset_record(info: ModelInfo, split: str, model: str | os.PathLike) -> dict:
    """What a rebuilt file's metadata says about its rows: which split of which dataset, and its positions."""
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)} to rebuild, got {split!r}.")
    settings, splits, n = info.data_settings, info.splits, info.n_structures
    if not (settings and splits and n):
        raise InputError(f"{model} records no dataset settings and split, so its {split} split cannot be rebuilt.")
    if "molecule" not in settings or "symbols" not in settings:
        raise InputError(
            f"{model} was trained on a molecule set ({info.data_title}); only a one-molecule dataset's split is "
            "rebuilt (a set's rows depend on its molecule list)."
        )
    return {
        "split": split,
        "of_model": Path(model).name,
        "n_structures": n,
        "splits": dict(splits),
        "positions": sorted(_split_positions(info, split)),
    }


def _split_positions(info: ModelInfo, split: str) -> list[int]:
    """Positions of ``split`` in the dataset a model was trained on, by the split its checkpoint records."""
    splits = info.splits
    return split_indices(info.n_structures, seed=splits["seed"], train=splits["train"], val=splits["val"])[split]


def rebuild_split(model: str | os.PathLike, split: str, out: str | os.PathLike, **options) -> Path:
    """Generate (or resume) the rows of ``model``'s ``split`` (train, val or test) of its dataset into ``out``.

    Parameters
    ----------
    model : a checkpoint trained on a one-molecule dataset of ``phisnet generate``.
    split : which of its dataset's splits.
    out : the ASE database to write (``.db``); resumable like every generation.
    options : how the calculations run, as for ``phisnet.data.generate`` (``workers``, ``scheduler``, ``threads``,
        ``guess_model``, ``progress``, ``log``).

    Returns
    -------
    The path of the database, holding the split's rows (with their sample indices, which are the dataset's
    positions).
    """
    info = ModelInfo.from_metadata(read_checkpoint(model)["metadata"])
    subset = subset_record(info, split, model)
    log = options.get("log", print)
    log(
        f"{len(subset['positions'])} rows: the {split} split of the {subset['n_structures']}-structure dataset "
        f"{model} was trained on ({info.data_title})."
    )
    return generate_rows(GenerationSettings.from_json(info.data_settings), subset["positions"], out, subset, **options)


def model_test_data(info: ModelInfo, model: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """Where a model's test geometries are: its own dataset (the path its checkpoint records, under ``root``), else
    its test split rebuilt as ``data/<model>-test.db`` (``scripts/test_splits.sh``); None when neither exists."""
    if info.data_path and (Path(root) / info.data_path).is_file():
        return Path(root) / info.data_path
    rebuilt = Path(root) / "data" / f"{Path(model).stem}-test.db"
    return rebuilt if rebuilt.is_file() else None


def subset_positions(dataset, info: ModelInfo, split: str, path: str) -> list[int] | None:
    """Positions in ``dataset`` of a model's ``split`` when ``dataset`` is a rebuilt subset of the model's data;
    None when ``dataset`` is no subset. InputError when it is another dataset's or lacks some of the split."""
    subset = dataset.metadata.get("subset")
    if subset is None:
        return None
    same = (
        info.data_settings == (dataset.metadata.get("settings") or {})
        and info.n_structures == subset["n_structures"]
        and info.splits == subset["splits"]
    )
    if not same:
        raise InputError(
            f"{dataset.path} holds rows of another dataset than the one {path} was trained on "
            f"({info.n_structures} structures, {info.data_title}); score it with --split all."
        )
    if split not in SPLITS:
        raise InputError(f"{dataset.path} is one molecule's data: it has no {split} split.")
    wanted = _split_positions(info, split)
    where = {int(sample["sample_index"]): k for k, sample in enumerate(dataset.samples)}
    missing = [p for p in wanted if p not in where]
    if missing:
        raise InputError(
            f"{dataset.path} holds the rebuilt {subset['split']} split of {subset['of_model']}'s data "
            f"({len(wanted) - len(missing)} of the {len(wanted)} {split} rows present): finish it with the command "
            "that made it, or score what it holds with --split all."
        )
    return [where[p] for p in wanted]
