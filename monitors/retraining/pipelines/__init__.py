"""Retraining jobs as runs of a pipeline orchestrator: Metaflow (``metaflow_backend``) and Kubeflow
Pipelines (``kfp_backend``).

Each orchestrator's client pins packages that sluice's own set cannot take (Metaflow needs boto3, whose
botocore pins python-dateutil below the kubernetes client's; kfp pins protobuf and kubernetes), so each
runs from a virtual environment of its own (``make pipeline-tools`` builds them under
``<state_dir>/tools/``). The backends here import neither: they call a small script of this folder with
that environment's Python, and those scripts import nothing of sluice.
"""
