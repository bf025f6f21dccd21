"""Everything the README tells users to call exists after `import swin_backbone`, and its API example runs."""
import os
import re
import subprocess
import sys

import numpy as np

from conftest import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
PLUGINS = ("swin_backbone.ppdet", "swin_backbone.paddleseg")  # imported explicitly, as the README says


def api_section() -> str:
    return README[README.index("## API"):README.index("\n## ", README.index("## API") + 1)]


def test_every_referenced_name_exists_after_import():
    references = set(re.findall(r"\b((?:swin_backbone|sb)\.[A-Za-z_][\w.]*[A-Za-z_0-9])", README))
    references = {r.replace("sb.", "swin_backbone.", 1) if r.startswith("sb.") else r for r in references}
    references = {r for r in references if not r.startswith(PLUGINS) and not r.endswith((".py", ".yml"))}
    assert "swin_backbone.runtime.set_num_threads" in references, references
    code = ("import json, swin_backbone\nmissing = []\nfor ref in " + repr(sorted(references)) + ":\n"
            "    obj = swin_backbone\n"
            "    for part in ref.split('.')[1:]:\n"
            "        if not hasattr(obj, part):\n"
            "            missing.append(ref); break\n"
            "        obj = getattr(obj, part)\n"
            "print(json.dumps(missing))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", f"README names missing after import: {proc.stdout}"


def test_api_example_runs(tmp_path):
    """The API section's code, line by line as written, with the authors' file it names made up (random weights)."""
    blocks = re.findall(r"```python\n(.*?)```", api_section(), flags=re.S)
    assert blocks, "no python example in the README's API section"
    from test_convert import authors_layout
    from torch_format import save_torch_zip
    from swin_backbone import create_classifier

    save_torch_zip({"model": authors_layout(create_classifier("swin_tiny_patch4_window7_224"))},
                   str(tmp_path / "swin_tiny_patch4_window7_224.pth"))
    script = "import sys\nsys.path.insert(0, " + repr(ROOT) + ")\n" + "\n".join(blocks)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert np.isclose(float(proc.stdout.strip().splitlines()[-1]), 4.49, atol=0.01), proc.stdout


def test_demo_prints_the_four_feature_shapes():
    """tools/demo.py: the Swin-T backbone on its built-in 250x333 picture, one line per stage."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py")], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = re.findall(r"stage (\d): \[(\d+), (\d+), (\d+), (\d+)\] \(stride (\d+)\)", proc.stdout)
    # channels 96 * 2^i, sizes ceil(250 / stride) x ceil(333 / stride)
    assert [tuple(map(int, s)) for s in stages] == [(0, 1, 96, 63, 84, 4), (1, 1, 192, 32, 42, 8),
                                                     (2, 1, 384, 16, 21, 16), (3, 1, 768, 8, 11, 32)], proc.stdout
    assert "input [1, 3, 250, 333]" in proc.stdout, proc.stdout


def test_backbone_takes_the_arguments_the_readme_lists():
    """The API section lists the authors' detection-backbone arguments that SwinTransformer takes, in order."""
    import inspect

    from swin_backbone import SwinTransformer

    listed = re.search(r"`SwinTransformer` takes the authors' detection-backbone arguments \(`([^`]*)`\)", README, re.S)
    assert listed, "the README's argument list of SwinTransformer is gone"
    names = [name.strip() for name in listed.group(1).split(",")]
    assert names == list(inspect.signature(SwinTransformer).parameters), names
