"""The sampling design of an annotation campaign: which distinct descriptions experts code, each
with its known inclusion probability, so that the accuracy measured on them is unbiased for the
whole traffic of the window (docs/autocode.md, "Annotation campaigns").

The population is the window's distinct descriptions (*units*), each with its *frequency* (the
rows of traffic it stands for) and the IC of its latest prediction. The design is stratified:

- **strata** are IC bands (``bands``: the inner edges; IC in [e_i, e_i+1));
- **allocation**: of the ``size`` units, a share ``1 - uncertainty_share`` goes to the strata in
  proportion to their traffic (the representative part), and ``uncertainty_share`` in proportion
  to traffic × (1 - mean IC) (the uncertainty part: the low-IC bands, where the model errs, get
  more experts' time). Every stratum with units gets at least 2 (a variance needs two), none more
  than it has;
- **within a stratum**, units are drawn with probability proportional to their frequency,
  without replacement, by systematic sampling over a random order (Madow's method, in integers so
  that the probabilities are exact): π = n_h · f / F_h, and a unit whose π would reach 1 is taken
  with certainty (π = 1), the rest drawn among the others.

The weight of a drawn unit is f / π (rows of traffic it stands for): within a stratum it is
F_h / n_h for every unit drawn, and the weights of a stratum add up to its traffic exactly. Pure
uncertainty sampling (the N lowest ICs) would give confident rows no chance at all and no
unbiased estimate; here every unit has π > 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autocode.errors import UserError

DEFAULT_BANDS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75)
MIN_PER_STRATUM = 2  # the smallest sample of a stratum whose variance can be estimated


class DesignError(UserError, ValueError):
    """A campaign that cannot be drawn as asked; the message says what to change."""


@dataclass(frozen=True)
class Drawn:
    """The drawn units (the input's columns plus ``stratum``, ``inclusion_probability`` and
    ``weight``) and one row per stratum: its band, units, rows (traffic), mean IC, sample size."""

    sample: pd.DataFrame
    strata: pd.DataFrame


def check_bands(bands: Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(b) for b in bands)
    if any(not 0.0 < b < 1.0 for b in edges):
        raise DesignError(f"IC bands {list(edges)}: every edge must be strictly between 0 and 1")
    if any(b >= c for b, c in itertools.pairwise(edges)):
        raise DesignError(f"IC bands {list(edges)}: edges must increase")
    return edges


def band_labels(bands: Sequence[float]) -> list[str]:
    edges = [0.0, *bands, 1.0]
    return [
        f"ic[{low:.2f},{high:.2f}{']' if i == len(edges) - 2 else ')'}"
        for i, (low, high) in enumerate(itertools.pairwise(edges))
    ]


def allocate(
    rows: np.ndarray, units: np.ndarray, mean_ic: np.ndarray, size: int, uncertainty_share: float
) -> np.ndarray:
    """Sample size of each stratum (see the module's docstring): the minimum first, then one
    unit at a time to the open stratum furthest below its target (ties: the first)."""
    rows = np.asarray(rows, dtype=np.float64)
    units = np.asarray(units, dtype=np.int64)
    if size > units.sum():
        raise DesignError(f"a sample of {size} from {int(units.sum())} units")
    proportional = rows / rows.sum()
    uncertain = rows * np.clip(1.0 - np.nan_to_num(mean_ic), 0.0, 1.0)
    uncertain = uncertain / uncertain.sum() if uncertain.sum() > 0 else proportional
    target = size * ((1 - uncertainty_share) * proportional + uncertainty_share * uncertain)
    floor = np.minimum(MIN_PER_STRATUM, units)
    taken = floor if floor.sum() <= size else np.zeros_like(units)
    taken = taken.copy()
    for _ in range(size - int(taken.sum())):
        deficit = np.where(taken < units, target - taken, -np.inf)
        taken[int(np.argmax(deficit))] += 1
    return taken


def pps_systematic(
    frequencies: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` of the units with probability proportional to ``frequencies`` (positive
    integers), without replacement: (indices drawn, inclusion probability of every unit).

    Units whose probability would reach 1 are taken with certainty (repeatedly: removing them
    raises the others'); the rest by systematic sampling of a random order, in integers: unit j
    covers n·f_j of n·F points, a random start and a step of F pick n points, each in a different
    unit (n·f_j < F), so P(j) = n·f_j / F exactly."""
    frequencies = np.asarray(frequencies, dtype=np.int64)
    count = len(frequencies)
    if n > count:
        raise DesignError(f"{n} units asked of a stratum of {count}")
    certain = np.zeros(count, dtype=bool)
    while True:
        left = n - int(certain.sum())
        total = int(frequencies[~certain].sum())
        newly = ~certain & (left * frequencies >= total) if left > 0 else np.zeros(count, bool)
        if not newly.any():
            break
        certain |= newly
    probability = np.where(certain, 1.0, 0.0)
    drawn = list(np.flatnonzero(certain))
    left = n - len(drawn)
    if left > 0:
        others = np.flatnonzero(~certain)
        total = int(frequencies[others].sum())
        probability[others] = left * frequencies[others] / total
        order = rng.permutation(others)
        ends = np.cumsum(left * frequencies[order])  # unit order[j] covers [ends[j-1], ends[j])
        points = int(rng.integers(0, total)) + total * np.arange(left)
        drawn += list(order[np.searchsorted(ends, points, side="right")])
    return np.sort(np.asarray(drawn, dtype=np.int64)), probability


def draw(
    units: pd.DataFrame,
    size: int,
    seed: int,
    bands: Sequence[float] = DEFAULT_BANDS,
    uncertainty_share: float = 0.5,
) -> Drawn:
    """Draw ``size`` of ``units`` (columns ``frequency``, a positive integer, and ``ic``; in a
    deterministic order: the same units and seed give the same sample)."""
    missing = [c for c in ("frequency", "ic") if c not in units]
    if missing:
        raise DesignError(f"units lack the columns {missing}")
    if size < 1:
        raise DesignError(f"sample size {size}: ask for at least 1 description")
    if not 0.0 <= uncertainty_share <= 1.0:
        raise DesignError(f"uncertainty share {uncertainty_share}: give a number in [0, 1]")
    if len(units) == 0:
        raise DesignError("no descriptions to sample from")
    if size > len(units):
        raise DesignError(
            f"a sample of {size} descriptions asked, but the population has only {len(units)} "
            f"distinct ones: ask for at most {len(units)}"
        )
    edges = check_bands(bands)
    frequency = units["frequency"].to_numpy(dtype=np.int64)
    if (frequency < 1).any():
        raise DesignError("every unit needs a frequency of at least 1")
    ic = units["ic"].to_numpy(dtype=np.float64)
    stratum = np.searchsorted(np.asarray(edges), np.nan_to_num(ic, nan=0.0), side="right")
    labels = band_labels(edges)
    present = np.unique(stratum)
    rows = np.array([frequency[stratum == h].sum() for h in present])
    counts = np.array([(stratum == h).sum() for h in present])
    mean_ic = np.array(
        [np.average(ic[stratum == h], weights=frequency[stratum == h]) for h in present]
    )
    sizes = allocate(rows, counts, mean_ic, size, uncertainty_share)
    rng = np.random.default_rng(seed)
    drawn, probabilities = [], []
    for h, n_h in zip(present, sizes, strict=True):
        members = np.flatnonzero(stratum == h)
        if n_h == 0:
            continue
        chosen, probability = pps_systematic(frequency[members], int(n_h), rng)
        drawn.append(members[chosen])
        probabilities.append(probability[chosen])
    rows_drawn = np.concatenate(drawn)
    pi = np.concatenate(probabilities)
    sample = units.iloc[rows_drawn].reset_index(drop=True)
    sample = sample.assign(
        stratum=np.asarray(labels, dtype=object)[stratum[rows_drawn]],
        inclusion_probability=pi,
        weight=frequency[rows_drawn] / pi,
    )
    summary = pd.DataFrame(
        {
            "stratum": [labels[h] for h in present],
            "units": counts,
            "rows": rows,
            "mean_ic": mean_ic,
            "sample": sizes,
        }
    )
    return Drawn(sample, summary)
