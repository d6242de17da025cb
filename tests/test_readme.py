"""README stays true: its configuration table is the settings class, its API list is the app's."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def load_generator():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_table_is_generated_from_settings() -> None:
    generator = load_generator()
    assert generator.readme_with_table(README) == README, "run: .venv/bin/python scripts/settings_table.py --write"


def test_every_route_has_a_curl_example() -> None:
    from prunebench.service.app import create_app

    documented = README.replace("$JOB", "{job_id}")
    paths = [*create_app().openapi()["paths"], "/metrics"]
    assert "/v1/jobs/{job_id}/result" in paths
    for path in paths:
        pattern = re.sub(r"\\\{[^}]+\\\}", r"[^ ]+", re.escape(path))
        assert re.search(r"\$API" + pattern + r"\b", documented), f"README has no curl example for {path}"
