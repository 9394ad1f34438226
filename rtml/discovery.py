"""Which services exist in this checkout, and which modules add commands to ``rtml``."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_ORDER = ("ingest", "features", "inference", "monitor", "rollout")


def runnable_services() -> list[str]:
    """Services that have an entry point (``services/<name>/__main__.py``), in start order."""
    folder = PROJECT_ROOT / "services"
    return [name for name in SERVICE_ORDER if (folder / name / "__main__.py").exists()]


def command_modules() -> list[str]:
    """Modules with a ``register(subparsers)`` that adds commands: ``services/*/cli.py``, ``rtml/*/cli.py``."""
    modules = [f"services.{path.parent.name}.cli" for path in sorted((PROJECT_ROOT / "services").glob("*/cli.py"))]
    modules += [f"rtml.{path.parent.name}.cli" for path in sorted((PROJECT_ROOT / "rtml").glob("*/cli.py"))]
    return modules
