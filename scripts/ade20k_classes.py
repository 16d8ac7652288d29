"""Write gfnet_cli/resources/ade20k.json from mmsegmentation's ADE20KDataset class list.

The 150 names are read from the source of an mmsegmentation wheel (never typed by hand):

    pip download mmsegmentation==1.2.2 --no-deps -d /tmp/mmseg
    python scripts/ade20k_classes.py /tmp/mmseg/mmsegmentation-1.2.2-py3-none-any.whl

Names are stripped of surrounding spaces (mmsegmentation spells class 7 ``"bed "``).
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

SOURCE = "mmseg/datasets/ade.py"
TARGET = Path(__file__).resolve().parent.parent / "gfnet_cli" / "resources" / "ade20k.json"


def ade20k_classes(wheel: str | Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        tree = ast.parse(archive.read(SOURCE).decode("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "METAINFO":
            fields = {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
            names = [str(name).strip() for name in fields["classes"]]
            if len(names) != 150:
                raise SystemExit(f"{SOURCE} lists {len(names)} classes, expected 150")
            return names
    raise SystemExit(f"no METAINFO in {SOURCE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    TARGET.write_text(json.dumps(ade20k_classes(sys.argv[1]), indent=1) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET}\n")
