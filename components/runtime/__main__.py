"""`python -m hpc_runtime STEP REQUEST.json`: run one step where the store is; print its summary.

The summary is the last stdout line, prefixed with `hpc-result `; a data error exits 3 and prints
`hpc-error {"problem": ..., "fix": ...}` so the orchestrator can show it as it would a local one.
"""

from __future__ import annotations

import json
import sys

from .increment import FeatureDataError
from .steps import STEPS


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in STEPS:
        print(f"usage: python -m hpc_runtime {{{'|'.join(STEPS)}}} REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    try:
        summary = STEPS[argv[0]](request)
    except FeatureDataError as exc:
        print("hpc-error " + json.dumps({"problem": exc.problem, "fix": exc.fix}), flush=True)
        return 3
    print("hpc-result " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
