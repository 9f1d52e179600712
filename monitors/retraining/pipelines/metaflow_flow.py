"""The Metaflow flow a retraining job runs: ``start`` → ``train`` → ``end``.

``train`` runs the training command (the job's entrypoint with its request's arguments) with the request's
environment, streams its output into the task's log, and fails the step (and so the run) when the command
exits non-zero. It carries ``@resources(gpu=...)`` from ``SLUICE_JOB_GPUS``, which Metaflow honours when
the step runs on Kubernetes or AWS Batch (``retraining.metaflow.decorators: [kubernetes]``); locally, the
command uses the machine's GPU when CUDA is there. It runs in the Metaflow environment, not sluice's:
it imports metaflow and the standard library only.
"""

import json
import os
import subprocess

from metaflow import FlowSpec, Parameter, current, resources, step


class SluiceRetrainFlow(FlowSpec):  # type: ignore[misc]
    command = Parameter("command", required=True, help="The training command, as a JSON list.")
    job_id = Parameter("job_id", required=True, help="sluice's job id, also the run's tag sluice_job:<id>.")

    @step
    def start(self) -> None:
        self.argv = json.loads(self.command)
        self.next(self.train)

    @resources(gpu=int(os.environ.get("SLUICE_JOB_GPUS", "0")))
    @step
    def train(self) -> None:
        print(f"sluice job {self.job_id}, Metaflow run {current.pathspec}")
        self.exit_code = subprocess.call(self.argv)
        if self.exit_code != 0:
            raise RuntimeError(f"the training command exited with {self.exit_code}")
        self.next(self.end)

    @step
    def end(self) -> None:
        pass


if __name__ == "__main__":
    SluiceRetrainFlow()
