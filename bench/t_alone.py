"""T alone, in a minute: `python -m bench.t_alone [--profile] [--bare]` (the quick scale).

SQL statements per stream, then `make bench`'s T (throughput) and L (first chunk at light load) on one
fresh daphne serving today's chatsvc (and, with `--bare`, the bare view), their figures printed as JSON;
`--profile` adds py-spy's summary of chatsvc under T: for trying a change to the hot path without the
whole bench."""

import argparse
import json
import os

from bench import apps, run, scenarios
from bench.servers import CLIENT_CORE, PINNING, Server


def measure(app: apps.App, scale: scenarios.Scale) -> dict:
    with Server("daphne", app, log_path=run.LOGS / f"t-alone-{app.name}.log") as server:
        scenarios.warm_up(server, scale)
        return {**scenarios.light(server, scale), **scenarios.throughput(server, scale)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.t_alone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="also profile chatsvc under T with py-spy")
    parser.add_argument("--bare", action="store_true", help="also measure the bare view")
    args = parser.parse_args()
    scale = scenarios.Scale.from_env(quick=True)
    if PINNING:
        os.sched_setaffinity(0, {CLIENT_CORE})
    run.LOGS.mkdir(parents=True, exist_ok=True)
    with run.one_run_at_a_time():
        chatsvc = apps.chatsvc()
        sql = run.count_sql(chatsvc)
        figures = {
            "sql_per_stream": sql["per_stream"],
            "sql_round_trips_per_stream": sql["round_trips_per_stream"],
            "chatsvc": measure(chatsvc, scale),
        }
        if args.bare:
            figures["bare"] = measure(apps.bare(), scale)
        print(json.dumps(figures, indent=1))
        if args.profile:
            print(run.profiled(chatsvc, scale))


if __name__ == "__main__":
    main()
