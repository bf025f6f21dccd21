"""The reference fixtures in the repository hold exactly the authors' numbers (MANIFEST.json of the originals)."""
import os

from conftest import FIXTURES
from fixtures.swin_reference.pack import MANIFEST, check


def test_packed_reference_matches_manifest():
    assert os.path.isfile(MANIFEST), f"reference manifest missing: {MANIFEST}"
    assert check(os.path.join(FIXTURES, "swin_reference")) == []
