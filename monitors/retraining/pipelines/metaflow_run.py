"""Run one retraining job as a Metaflow run, with Metaflow's Runner API, in the Metaflow environment.

    <metaflow venv>/bin/python metaflow_run.py --job-id ID [--with DECORATOR ...] -- COMMAND...

It prints the flow's output as it runs, then the run's pathspec and outcome, and exits 0 when the run
succeeded, 1 when it failed. The local job backend's runner starts it and records that exit code, so
sluice's ``metaflow`` backend is the local one with this in front of the entrypoint. The run is tagged
``sluice_job:<id>``: ``Flow("SluiceRetrainFlow").runs("sluice_job:<id>")`` finds it in Metaflow's client.
"""

import argparse
import json
import os
import sys
from pathlib import Path

FLOW = Path(__file__).with_name("metaflow_flow.py")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--with", dest="decorators", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # Metaflow names each run's user; a job has none of its own.
    os.environ.setdefault("USERNAME", "sluice")
    from metaflow import Runner

    options = {"with": args.decorators} if args.decorators else {}
    with Runner(str(FLOW), show_output=True, env=dict(os.environ)) as runner:
        result = runner.run(
            command=json.dumps(command), job_id=args.job_id, tags=[f"sluice_job:{args.job_id}"], **options
        )
        run = result.run
        outcome = "succeeded" if run is not None and run.successful else "failed"
        print(
            f"Metaflow run {run.pathspec if run is not None else '-'} {outcome} ({result.status})", flush=True
        )
    return 0 if outcome == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
