"""The parent-only kill race, N times: a 2-worker `instructmix run` has its parent SIGKILLed
while workers write parts, the template changes, and the run is redone at once. Prints, per try,
the records rendered from the old template text (must be 0) and the workers still alive 5 s
after the kill (must be none).

    python benchmarks/chaos_parent_kill.py --tries 10

Run it from the repository root; the `instructmix` it tests is the `pipeline` package there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_chaos import kill_parent_only_then_rerun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args()
    results = []
    for i in range(args.tries):
        with tempfile.TemporaryDirectory(prefix="instructmix-chaos-") as tmp:
            stale, marked, survivors = kill_parent_only_then_rerun(Path(tmp))
        row = {"try": i + 1, "stale": stale, "records": marked, "survivors": len(survivors)}
        results.append(row)
        print(json.dumps(results[-1]), flush=True)
    clean = sum(r["stale"] == 0 and r["survivors"] == 0 for r in results)
    print(f"{clean} of {len(results)} tries: zero stale records and no surviving worker")


if __name__ == "__main__":
    main()
