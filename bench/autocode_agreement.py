"""How often dev1000's experts gave the same description the same code: a ceiling on what any
model that reads the description alone can reach on these rows.

Descriptions are the same when the annotation loop says so (`autocode.annotate.campaign.text_key`:
case and spacing ignored). For every pair of rows with the same description: the share of pairs
coded alike, overall and among pairs whose register variables (``type_``, ``nature``,
``event``, ``cj``) are also the same; and the accuracy of the best rule that codes each such
description by its most frequent code (in-sample: an upper bound on these rows).

    python -m bench.autocode_agreement --output agreement.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench import report
from bench.autocode_models import DEV1000

REGISTER = ("type_", "nature", "event", "cj")


def measure(path: str = DEV1000) -> dict[str, Any]:
    from autocode.annotate.campaign import text_key

    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows["key"] = [text_key(t) for t in rows["text_description"]]
    register = rows[list(REGISTER)].agg("|".join, axis=1)
    pairs = alike = same_register = alike_same_register = 0
    majority_right = repeated_rows = 0
    for _, group in rows.groupby("key"):
        if len(group) < 2:
            continue
        repeated_rows += len(group)
        majority_right += int(group["code"].value_counts().iloc[0])
        codes, variables = group["code"].tolist(), register[group.index].tolist()
        for i, j in itertools.combinations(range(len(group)), 2):
            pairs += 1
            alike += codes[i] == codes[j]
            if variables[i] == variables[j]:
                same_register += 1
                alike_same_register += codes[i] == codes[j]
    return {
        "rows": len(rows),
        "rows_whose_description_repeats": repeated_rows,
        "distinct_repeated_descriptions": int((rows["key"].value_counts() > 1).sum()),
        "pairs_same_description": pairs,
        "pairs_coded_alike": round(alike / pairs, 4) if pairs else None,
        "pairs_same_description_and_register": same_register,
        "pairs_coded_alike_same_register": (
            round(alike_same_register / same_register, 4) if same_register else None
        ),
        "most_frequent_code_accuracy_on_repeated": (
            round(majority_right / repeated_rows, 4) if repeated_rows else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_agreement", description=__doc__)
    parser.add_argument("--input", default=DEV1000, help="the expert-coded descriptions (CSV)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if not Path(args.input).is_file():
        parser.error(f"{args.input}: no such file")
    report(measure(args.input), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
