"""Print the project's runtime dependencies from pyproject.toml, one per line, so the
image installs them in a layer of their own, cached until pyproject.toml changes."""

import sys
import tomllib
from pathlib import Path

pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
print("\n".join(tomllib.loads(pyproject.read_text())["project"]["dependencies"]))
