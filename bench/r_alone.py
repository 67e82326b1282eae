"""R alone, in a minute: `python -m bench.r_alone [answers]` (default: the quick scale's 200).

The same scenario as `make bench`'s R (`bench.scenarios.readers`: two daphne processes on one Redis,
each answer read by 1 local + 4 remote readers), on its own, its figures printed as JSON: for trying a
change to the relay without the whole bench."""

import dataclasses
import json
import os
import sys

from bench import apps, run, scenarios
from bench.servers import CLIENT_CORE, PINNING


def main() -> None:
    scale = scenarios.Scale.from_env(quick=True)
    if len(sys.argv) > 1:
        scale = dataclasses.replace(scale, reads=int(sys.argv[1]))
    if PINNING:
        os.sched_setaffinity(0, {CLIENT_CORE})
    run.LOGS.mkdir(parents=True, exist_ok=True)
    with run.one_run_at_a_time():
        figures = scenarios.readers(apps.chatsvc(), scale, log_dir=run.LOGS, label=f"r-alone-{scale.reads}")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
