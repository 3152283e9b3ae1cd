"""docs/extending.md's recipes, run as the page writes them: a backbone, an attribution method and
a metric registered by the page's own code, then used by the library as any of the study's.
In a child process, so that the three names never enter this worker's registries."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECKS = r'''
import json
import torch
import xai_utils
from xai_utils.settings import load_profile
from xai_utils.study.models import build_model

torch.manual_seed(0)
model = build_model("tiny_cnn", None, num_classes=4, mean=[0.5] * 3, std=[0.25] * 3).eval()
images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
scores = xai_utils.evaluate(model, images, labels, methods=["gradient_norm", "gradcam"],
                            metrics=["top_decile_share", "complexity"], batch_size=4)
preds = model(images).argmax(1)
maps = xai_utils.attribute(model, images, preds, "gradient_norm")
# gradient_norm, image by image: the gradient of the explained logit, |.| summed over channels
loop_maps = []
for i in range(len(images)):
    x = images[i:i + 1].clone().requires_grad_(True)
    model(x)[0, preds[i]].backward()
    loop_maps.append(x.grad[0].abs().sum(0).tolist())
# top_decile_share, pixel by pixel: the 10 % largest |a| over the total
loop_share = []
for m in maps:
    values = sorted((abs(v) for v in m.flatten().tolist()), reverse=True)
    loop_share.append(sum(values[:len(values) // 10]) / sum(values))
profile = load_profile("smoke", arch="tiny_cnn", widths=[8, 16, 16, 16], methods=["gradient_norm", "gradcam"],
                       metrics=["top_decile_share", "pixel_flipping"])
print(json.dumps({"rows": scores.to_dict("records"), "maps": maps[:, 0].tolist(), "loop_maps": loop_maps,
                  "loop_share": loop_share, "arch": sorted({r.arch for r in profile.runs()}),
                  "labels": [xai_utils.ops.attribution.METHODS["gradient_norm"].label,
                             xai_utils.ops.metrics.METRICS["top_decile_share"].label]}))
'''


def _recipes() -> str:
    """The page's Python blocks, in its order (backbone, attribution method, metric)."""
    page = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 3 and "register_backbone" in blocks[0] and "register_method" in blocks[1] \
        and "register_metric" in blocks[2]
    return "\n\n".join(blocks)


def test_the_pages_backbone_method_and_metric_work_as_the_studys_own():
    done = subprocess.run([sys.executable, "-c", _recipes() + CHECKS], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    assert {(r["method"], r["metric"]) for r in rows} == {
        (m, k) for m in ("gradient_norm", "gradcam") for k in ("top_decile_share", "complexity")}
    assert len(rows) == 6 * 4
    share = {r["image"]: r["value"] for r in rows if (r["method"], r["metric"]) == ("gradient_norm", "top_decile_share")}
    for i, expected in enumerate(out["loop_share"]):
        assert abs(share[i] - expected) < 1e-5
    for got, expected in zip(out["maps"], out["loop_maps"]):
        assert max(abs(g - e) for gr, er in zip(got, expected) for g, e in zip(gr, er)) < 1e-5
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"] == "top_decile_share")
    assert out["arch"] == ["tiny_cnn"] and out["labels"] == ["Gradient norm", "Top-decile share"]
