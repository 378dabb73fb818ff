"""Trained trial students, kept for the final fine-tune (torch; ``OUT/.students/trial-N.pt``).

A trial trains its student for ``trial_epochs`` and used to throw the weights away; the final fine-tune
then distilled the chosen plan again from the teacher. Two things went wrong with that (the frontier's
MobileNetV3 at ⅓ of its dense p95, ``docs/benchmarks.md``): a fine-tune cut short by ``--time-budget``
(12 of 80 epochs) started from scratch and ended below the trial it was held to, and the fall-back that
trained the trial again did not give its weights back (val 0.8783 against the trial's 0.8862). So each
trained student's weights are kept beside its plan; the fine-tune that the time budget cuts continues from
them, and a fall-back ships them as the trial had them. A student the process cannot find (a worker on
another host wrote it, or it was cleared) is trained again, as before.

Local workers (``--workers N``) keep theirs in their own folders (``OUT/workers/wN/``), where the run that
ships looks too; a search-only run elsewhere keeps none (nothing would ship them or clear them). The
folders are removed when ``compile`` ends, shipped, refused or failed: the output folder holds what ships.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

DIR = ".students"


def path_of(out: str | Path, number: int) -> Path:
    """Where trial ``number``'s student is kept."""
    return Path(out) / DIR / f"trial-{int(number)}.pt"


def keeps(out: str | Path, search_only: bool) -> bool:
    """Whether a run keeps its students: one that ships, or a local worker of one (``OUT/workers/wN``)."""
    return not search_only or Path(out).parent.name == "workers"


def _folders(out: str | Path) -> list[Path]:
    """The run's own folder, then its local workers'."""
    return [Path(out), *sorted((Path(out) / "workers").glob("w*"))]


def keep(out: str | Path, number: int, plan: dict[str, Any], student: Any) -> None:
    """Trial ``number``'s trained student (its state dict, beside its plan), written whole or not at all."""
    import torch

    from edgeopt._io import atomic_path

    path = path_of(out, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"plan": _key(plan), "state": state}, tmp)


def load(out: str | Path, number: int, plan: dict[str, Any]) -> dict[str, Any] | None:
    """Trial ``number``'s kept state dict; None when none is kept for that plan (another study's trial of
    the same number left in the folder is not this one)."""
    import torch

    for folder in _folders(out):
        path = path_of(folder, number)
        if not path.is_file():
            continue
        try:
            kept = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a file cut short or from another torch: trained again instead
            continue
        if isinstance(kept, dict) and kept.get("plan") == _key(plan):
            return kept["state"]
    return None


def _key(plan: dict[str, Any]) -> str:
    """The plan as the study stores it (JSON), so a plan read back from the study matches the one trained."""
    return json.dumps(plan, sort_keys=True, default=str)


def clear(out: str | Path) -> None:
    """Remove the kept students, the local workers' too."""
    for folder in _folders(out):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder / DIR)


__all__ = ["DIR", "clear", "keep", "keeps", "load", "path_of"]
