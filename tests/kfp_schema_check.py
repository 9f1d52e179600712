"""Checks what the kfp backend makes against kfp's own schemas; run with the kfp environment's Python
(it imports kfp_pipeline_spec, kfp_server_api and protobuf, which sluice's venv does not hold).

    <kfp python> tests/kfp_schema_check.py pipeline PIPELINE.yaml
    <kfp python> tests/kfp_schema_check.py run < RUN.json

``pipeline``: the compiled YAML parses, strictly (no unknown field), as a ``PipelineSpec`` message (and
its platform document, if any, as a ``PlatformSpec``), and kfp loads it back as a component. ``run``:
the body POSTed to ``/apis/v2beta1/runs`` has only ``V2beta1Run`` fields, builds a ``V2beta1Run`` with
kfp_server_api's client-side validation, and its ``pipeline_spec`` parses strictly as a ``PipelineSpec``.
Either prints the containers it found as JSON, or the first problem on stderr with exit code 1.
"""

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2


def containers(spec: dict[str, Any]) -> dict[str, Any]:
    """Each executor's container, and each root task's component and caching option."""
    message = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    deployment = json_format.MessageToDict(message.deployment_spec)
    executors = {
        name: executor["container"]
        for name, executor in deployment.get("executors", {}).items()
        if "container" in executor
    }
    tasks = {
        name: {
            "component": task.component_ref.name,
            "display_name": task.task_info.name,
            "cache": task.caching_options.enable_cache,
        }
        for name, task in message.root.dag.tasks.items()
    }
    for task in tasks.values():
        if task["component"] not in message.components:
            raise ValueError(f"task refers to a component that is not defined: {task['component']}")
    for name, component in message.components.items():
        if component.executor_label not in executors:
            raise ValueError(f"component {name} refers to a missing executor {component.executor_label}")
    return {"executors": executors, "tasks": tasks, "name": message.pipeline_info.name}


def check_pipeline(path: str) -> dict[str, Any]:
    from kfp import components

    documents = [document for document in yaml.safe_load_all(Path(path).read_text()) if document]
    found = containers(documents[0])
    for platform in documents[1:]:
        json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    components.load_component_from_file(path)  # kfp reads its own output back
    return found


def check_run(body: dict[str, Any]) -> dict[str, Any]:
    import kfp_server_api

    fields = set(kfp_server_api.V2beta1Run.attribute_map.values())
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ValueError(f"fields V2beta1Run does not have: {unknown}")
    configuration = kfp_server_api.Configuration()
    configuration.client_side_validation = True
    run = kfp_server_api.V2beta1Run(
        **{name: body[key] for name, key in kfp_server_api.V2beta1Run.attribute_map.items() if key in body},
        local_vars_configuration=configuration,
    )
    if not run.display_name:
        raise ValueError("a run needs a display_name")
    if body.get("pipeline_spec") is None:
        raise ValueError("a run needs a pipeline_spec (or a pipeline_version_reference)")
    return {**containers(body["pipeline_spec"]), "service_account": run.service_account}


def main() -> int:
    try:
        found = check_pipeline(sys.argv[2]) if sys.argv[1] == "pipeline" else check_run(json.load(sys.stdin))
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
