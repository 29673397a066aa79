"""Every service setting is documented: a description in code and a row in the README."""

from pathlib import Path

import pytest

from cloud_aggregator.settings import CloudSettings
from edge_node.settings import EdgeSettings
from vehicle_client.settings import FleetSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize(("settings", "prefix"), [(CloudSettings, "BMFL_CLOUD_"), (EdgeSettings, "BMFL_EDGE_"), (FleetSettings, "BMFL_FLEET_")])
def test_every_setting_has_a_description_and_a_readme_row(settings, prefix) -> None:
    for name, field in settings.model_fields.items():
        assert field.description, f"{settings.__name__}.{name} has no description"
        assert f"| `{prefix}{name.upper()}` |" in README, f"README lacks {prefix}{name.upper()}"
