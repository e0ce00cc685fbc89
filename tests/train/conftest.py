import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("sklearn")
pytest.importorskip("torchvision")
sys.path.insert(0, str(Path(__file__).parent))
