"""Compare the detection error types of ``densecontrast.analysis`` with tidecv 1.0.1 on synthetic data.

tidecv (the TIDE authors' package) computes AP at one IoU threshold with its own AP code and classifies
errors at that threshold; densecontrast re-evaluates every oracle with COCOeval and reports ΔAP50 with
``fg_iou=0.5`` for the same question. tidecv needs opencv, seaborn and pandas and has not been released
since 2020, so it runs in a separate environment: pass its Python with ``--tide-python``.

Run: ``python benchmarks/analysis_tidecv.py --tide-python /tmp/tidevenv/bin/python``
(writes ``benchmarks/results/analysis_tidecv.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _synthetic_coco import synthetic_coco
from pycocotools import mask as mask_utils

from densecontrast.analysis import analyze
from densecontrast.analysis._detection import classify
from densecontrast.analysis._inputs import prepare

TIDE_NAMES = {"Cls": "cls", "Loc": "loc", "Both": "both", "Dupe": "dupe", "Bkg": "bkg", "Miss": "missed"}

_TIDE = """
import json, sys, io, contextlib
from tidecv import TIDE, datasets
gt_path, res_path, mode = sys.argv[1:4]
tide = TIDE(mode=mode)
with contextlib.redirect_stdout(io.StringIO()):
    run = tide.evaluate(datasets.COCO(gt_path), datasets.COCOResult(res_path), mode=mode, name="r")
    main = tide.get_main_errors()["r"]
    special = tide.get_special_errors()["r"]
counts = {e.short_name: len(v) for e, v in run.error_dict.items()}
print(json.dumps({"ap50": run.ap, "main": main, "special": special, "counts": counts}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tide-python", required=True, help="a Python with tidecv installed")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "analysis_tidecv.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    gt, results = synthetic_coco(args.images, dets_per_image=16, size=(96, 160), seed=0)
    for image in gt["images"]:
        image["file_name"] = f"{image['id']}.png"  # tidecv's loader needs it
    for r in results:  # tidecv's box mode needs every result's box: the mask's bounding box
        r["bbox"] = [float(v) for v in mask_utils.toBbox(r["segmentation"])]
    out: dict[str, object] = {"images": args.images, "results": len(results)}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "res.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        for iou_type, mode in (("segm", "mask"), ("bbox", "bbox")):
            done = subprocess.run(
                [args.tide_python, "-c", _TIDE, str(gt_path), str(res_path), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            tide = json.loads(done.stdout.strip().splitlines()[-1])
            rep = analyze(gt, results, iou_type=iou_type, backend="faster-coco-eval")
            ours_counts = classify(prepare(gt, results, iou_type=iou_type)).counts()
            rows = {}
            for short, name in TIDE_NAMES.items():
                rows[name] = {
                    "tidecv_dAP50": round(tide["main"][short], 3),
                    "densecontrast_dAP50": round(100 * rep.detection50[name], 3),
                    "tidecv_count": tide["counts"].get(short, 0)
                    if short != "Both"
                    else tide["counts"]["Both"],
                    "densecontrast_count": ours_counts[name],
                }
            for short in ("FalsePos", "FalseNeg"):
                rows[short] = {
                    "tidecv_dAP50": round(tide["special"][short], 3),
                    "densecontrast_dAP50": round(100 * rep.detection50[short], 3),
                }
            out[iou_type] = {
                "tidecv_AP50": round(tide["ap50"], 3),
                "densecontrast_AP50": round(100 * rep.ap50, 3),
                "types": rows,
            }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
