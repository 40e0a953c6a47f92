# SPDX-License-Identifier: Apache-2.0
"""Benchmark code shipped with the package, so `llm-datadist bench` runs from an installed wheel.

- `transfer`: the two-process transfer benchmark (prefill child, ceilings, verification); the
  runnable code of `benchmarks/bench_transfer.py`.
- `failures`: peer-failure detection and link costs; the code of `benchmarks/bench_failures.py`.
- `peers`: NIXL and Mooncake drivers on the same cases (skipped when not importable).
- `report`: quantiles (numpy), the text table, the progress line (tqdm), the plot (matplotlib);
  tqdm and matplotlib are the `bench` extra's, each optional.
- `suite`: `llm-datadist bench`: every case, ceilings, extras, peers, table, JSON, plot.

Nothing here is imported by `import llm_datadist`.
"""
import json
from pathlib import Path
from typing import Any, Dict


def write_record(out: Path, record: Dict[str, Any], indent: int = 2) -> None:
    """Writes a benchmark's JSON record (creating its folder) and says where: every benchmark,
    in the package and in benchmarks/, records its runs this way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=indent) + "\n")
    print(f"recorded in {out}")
