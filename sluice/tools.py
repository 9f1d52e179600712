"""Virtual environments of their own, for tools whose pins sluice's set cannot take: the servers of the
local stack (moto, MLflow) and the pipeline clients the job backends call (Metaflow, kfp).

Each is made from a pinned requirements file under ``deploy/local/<name>/`` into
``<state_dir>/tools/<name>/``, and made again only when that file changes. ``make pipeline-tools`` runs
``python -m sluice.tools metaflow kfp``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["DEPLOY_LOCAL", "PIPELINE_TOOLS", "ToolError", "ensure_venv", "tool_python"]

DEPLOY_LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"
PIPELINE_TOOLS = {
    "metaflow": "Metaflow, for the metaflow job backend",
    "kfp": "the Kubeflow Pipelines SDK, for the kfp job backend",
}


class ToolError(RuntimeError):
    """A tool's environment could not be made; the message has pip's last words."""


def ensure_venv(venv: Path, requirements: Path, *, what: str) -> None:
    """A virtual environment with the pinned requirements, made again when they change."""
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(requirements)],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ToolError(
                f"could not install {what} from PyPI ({' '.join(step[:3])} exited "
                f"{result.returncode}):\n{(result.stdout + result.stderr)[-2000:]}"
            )
    stamp.write_text(digest)


def tool_python(state_dir: Path, name: str) -> Path:
    """The interpreter of the tool's environment under the state folder."""
    return state_dir / "tools" / name / "bin" / "python"


def main(names: list[str]) -> int:
    state_dir = Path(os.environ.get("SLUICE_STATE_DIR", ".sluice"))
    for name in names or list(PIPELINE_TOOLS):
        if name not in PIPELINE_TOOLS:
            print(f"unknown tool {name!r}; one of {', '.join(PIPELINE_TOOLS)}", file=sys.stderr)
            return 2
        try:
            ensure_venv(state_dir / "tools" / name, DEPLOY_LOCAL / name / "requirements.txt", what=name)
        except ToolError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"{PIPELINE_TOOLS[name]}: {tool_python(state_dir, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
