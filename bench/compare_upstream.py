"""Side by side: a prunebench sweep (CLI process and service job) against four upstream YOLOv5 `val.py` processes.

    .venv/bin/python bench/compare_upstream.py --upstream /path/to/yolov5/.git \
        --upstream-python /tmp/yolov5-venv/bin/python [--images 250 --reference ../shared/reference] [--rounds 3]

What it does, all in a temporary folder that is removed afterwards:

1. Checks out upstream YOLOv5 at the reference commit (``git archive``; never vendored) from
   ``--upstream`` (a clone or a bare git dir). Upstream's ``val.py`` has no pruning option, so one line
   is added after its model load, ``prune(model, s)`` with upstream's own ``utils.torch_utils.prune``
   when ``PRUNEBENCH_UPSTREAM_PRUNE`` is set: the flow that produced ``tests/fixtures/reference``.
2. Lays out the dataset as upstream expects COCO (``coco/val2017.txt``, YOLO labels from the instances
   JSON, the JSON under ``annotations/``): the bundled 120-image ``shapes-val``, or with ``--images 250``
   those 120 plus the first 130 images of the reference's ``shapes-train`` (renumbered 121-250, their
   YOLO labels turned into COCO boxes).
3. Starts the service as deployed, once, before any clock (``--service``, default ``1x2 2x1``): an embedded
   redis-server, the API and WORKERS warm ``prunebench worker`` processes with THREADS torch threads each
   (fan-out on), the dataset in its catalog; one untimed warm-up job per configuration.
4. Per round, interleaved: four upstream processes (sparsity 0, 0.3, 0.5, 0.7; ``--img 320 --batch 32
   --conf-thres 0.001 --iou-thres 0.6 --device cpu --save-json``), then one ``prunebench eval`` process
   with a cold decode cache, then one with a warm one (decoded images already on this host, as on
   a worker that ran a job on this dataset before), each timed as a whole process (interpreter start and
   imports included); then the same sweep as a job over HTTP on each service configuration, timed from
   the POST to the API reporting it succeeded; then the floor: the four points' forward passes alone,
   measured on their own in this process (:func:`measure_floor`).
5. Prints the table: median seconds, the ratios against upstream, each run's wall / floor, mAP@.5:.95 per
   point on both sides (upstream's from its predictions JSON rescored at full precision with
   pycocotools), and whether upstream's NMS time limit fired.

Upstream's dependencies go in their own venv (``--upstream-python``), e.g.:

    python3 -m venv /tmp/yolov5-venv
    git --git-dir=/path/to/yolov5/.git show 5081342f04fb287fc2e5f2b5a4e06752b7937b1c:requirements.txt > /tmp/req.txt
    /tmp/yolov5-venv/bin/pip install -r /tmp/req.txt pycocotools==2.0.11 torch==2.14.1 torchvision==0.29.1

Run it under the heavy lock on a quiet machine; quote ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COMMIT = "5081342f04fb287fc2e5f2b5a4e06752b7937b1c"
SPARSITIES = (0.0, 0.3, 0.5, 0.7)
ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "common" / "assets" / "demo"
CHECKPOINT = BUNDLED / "yolov5n_shapes.pt"
PRUNE_HOOK = (
    "        if os.getenv('PRUNEBENCH_UPSTREAM_PRUNE'):  # added by prunebench's bench/compare_upstream.py\n"
    "            from utils.torch_utils import prune as _prune\n"
    "            _prune(model, float(os.environ['PRUNEBENCH_UPSTREAM_PRUNE']))\n"
)
NMS_LIMIT = re.compile(r"NMS time limit .* exceeded")


# ---------------------------------------------------------------------------------------------------------
# Upstream checkout and dataset layout


def checkout_upstream(source: Path, into: Path) -> Path:
    """Upstream at COMMIT in ``into/yolov5`` (git archive: the source repository is left untouched)."""
    target = into / "yolov5"
    target.mkdir(parents=True)
    git_dir = source / ".git" if (source / ".git").exists() else source
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", COMMIT], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    val = target / "val.py"
    text = val.read_text()
    anchor = re.search(r"^        model = DetectMultiBackend\(.*\)\n", text, flags=re.MULTILINE)
    if anchor is None:
        raise SystemExit("upstream val.py changed: cannot find its model load to add the prune hook")
    val.write_text(text[: anchor.end()] + PRUNE_HOOK + text[anchor.end() :])
    return target


def _coco_to_yolo(instances: dict[str, Any], category_to_class: dict[int, int]) -> dict[int, list[str]]:
    sizes = {int(e["id"]): (float(e["width"]), float(e["height"])) for e in instances["images"]}
    lines: dict[int, list[str]] = {i: [] for i in sizes}
    for ann in instances["annotations"]:
        w0, h0 = sizes[int(ann["image_id"])]
        x, y, w, h = (float(v) for v in ann["bbox"])
        cls = category_to_class[int(ann["category_id"])]
        lines[int(ann["image_id"])].append(
            f"{cls} {(x + w / 2) / w0:.6f} {(y + h / 2) / h0:.6f} {w / w0:.6f} {h / h0:.6f}"
        )
    return lines


def _train_images(reference: Path, count: int, first_id: int, category_ids: list[int]) -> tuple[list, list, list]:
    """The first ``count`` shapes-train images as COCO entries, renumbered from ``first_id``."""
    import cv2

    folder = reference / "shapes-train"
    images, annotations, copies = [], [], []
    for k, path in enumerate(sorted((folder / "images").glob("*.jpg"))[:count]):
        image_id = first_id + k
        h0, w0 = cv2.imread(str(path)).shape[:2]
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": w0, "height": h0})
        copies.append((path, name))
        for row in (folder / "labels" / f"{path.stem}.txt").read_text().split("\n"):
            if not row.strip():
                continue
            cls, cx, cy, w, h = row.split()
            bw, bh = float(w) * w0, float(h) * h0
            box = [round((float(cx) - float(w) / 2) * w0, 2), round((float(cy) - float(h) / 2) * h0, 2)]
            box += [round(bw, 2), round(bh, 2)]
            annotations.append(
                {"image_id": image_id, "category_id": category_ids[int(cls)], "bbox": box, "area": round(bw * bh, 2),
                 "iscrowd": 0}
            )  # fmt: skip
    return images, annotations, copies


def build_dataset(into: Path, count: int, reference: Path | None) -> tuple[Path, Path, Path]:
    """(upstream data.yaml, images folder, instances JSON) for ``count`` images in upstream's COCO layout."""
    root = into / "data" / "coco"
    images_dir = root / "images" / "val2017"
    labels_dir = root / "labels" / "val2017"
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    instances = json.loads((BUNDLED / "shapes-val" / "instances_val2017.json").read_text())
    copies = [(BUNDLED / "shapes-val" / "images" / e["file_name"], e["file_name"]) for e in instances["images"]]
    category_ids = sorted(int(c["id"]) for c in instances["categories"])
    if count > len(instances["images"]):
        if reference is None:
            raise SystemExit(f"--images {count} needs --reference (the shared reference data's shapes-train)")
        more, anns, extra = _train_images(reference, count - len(instances["images"]), 121, category_ids)
        instances["images"] += more
        instances["annotations"] += anns
        copies += extra
    for number, ann in enumerate(instances["annotations"], start=1):
        ann["id"] = number
    for source, name in copies:
        shutil.copy(source, images_dir / name)
    # The model's classes are COCO's 80; the shapes use category ids 1-5 = classes 0-4 (the 80->91 map).
    to_class = {cat: cls for cls, cat in enumerate(category_ids)}
    for image_id, rows in _coco_to_yolo(instances, to_class).items():
        (labels_dir / f"{image_id:012d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    (root / "annotations").mkdir()
    annotations = root / "annotations" / "instances_val2017.json"
    annotations.write_text(json.dumps(instances))
    (root / "val2017.txt").write_text("".join(f"./images/val2017/{name}\n" for _, name in copies))
    names = "\n".join(f"  {i}: class{i}" for i in range(80))
    data_yaml = into / "data" / "shapes.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: val2017.txt\nval: val2017.txt\nnames:\n{names}\n")
    return data_yaml, images_dir, annotations


# ---------------------------------------------------------------------------------------------------------
# Running both sides


def offline_config(python: Path, work: Path) -> Path:
    """A YOLOv5 config dir holding the plot font it would otherwise download (this host is offline)."""
    folder = work / "yolov5-config"
    folder.mkdir()
    find = "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), 'fonts/ttf/DejaVuSans.ttf'))"
    font = Path(subprocess.run([str(python), "-c", find], check=True, capture_output=True, text=True).stdout.strip())
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copy(font, folder / name)
    return folder


def run_upstream(python: Path, upstream: Path, data_yaml: Path, work: Path, sparsity: float) -> dict[str, Any]:
    name = f"s{sparsity}"
    env = {
        **os.environ,
        "PRUNEBENCH_UPSTREAM_PRUNE": str(sparsity) if sparsity else "",
        "YOLOV5_CONFIG_DIR": str(work / "yolov5-config"),
        "YOLO_CONFIG_DIR": str(work / "yolov5-config"),
        "YOLO_OFFLINE": "1",
    }
    command = [str(python), "val.py", "--weights", str(CHECKPOINT), "--data", str(data_yaml), "--img", "320",
               "--batch", "32", "--conf-thres", "0.001", "--iou-thres", "0.6", "--device", "cpu", "--save-json",
               "--project", str(work / "runs"), "--name", name, "--exist-ok"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=upstream, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"upstream val.py failed at {sparsity}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    output = done.stdout + done.stderr
    predictions = work / "runs" / name / f"{CHECKPOINT.stem}_predictions.json"
    return {"seconds": seconds, "nms_limit": bool(NMS_LIMIT.search(output)), "predictions": predictions}


def run_prunebench(images: Path, annotations: Path, cache_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "PRUNEBENCH_CACHE_DIR": str(cache_dir), "PRUNEBENCH_LOG_JSON": "0"}
    command = [sys.executable, "-m", "prunebench.cli", "eval", "--checkpoint", str(CHECKPOINT), "--images",
               str(images), "--annotations", str(annotations), "--sparsities", "0.3,0.5,0.7", "--img-size", "320",
               "--batch-size", "32", "--device", "cpu", "--json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"prunebench eval failed:\n{done.stderr[-3000:]}")
    return _summary(json.loads(done.stdout), seconds)


SERVICE_DATASET = "vs-upstream"


class Service:
    """The deployed path: an embedded redis-server, the API and ``workers`` warm worker processes.

    Started (and their torch imports paid) before any clock runs, as a deployment's workers are; each
    ``job()`` is one sweep submitted over HTTP and timed from the POST to the moment the API reports it
    succeeded (result stored). ``threads`` is each worker's torch thread count; fan-out is on, so with two
    workers the sweep's points run on both.
    """

    def __init__(self, work: Path, images: Path, annotations: Path, workers: int, threads: int) -> None:
        import httpx

        from prunebench.cli.demo import wait_ready
        from prunebench.infra.processes import Supervisor
        from prunebench.infra.redis_server import EmbeddedRedis, free_port

        self.root = work / f"service-{workers}x{threads}"
        self.root.mkdir()
        catalog = self.root / "datasets.json"
        catalog.write_text(json.dumps({SERVICE_DATASET: {"images": str(images), "annotations": str(annotations)}}))
        self.redis = EmbeddedRedis(workdir=self.root / "redis")
        url = self.redis.start()
        env = {**os.environ, "PRUNEBENCH_REDIS_URL": url, "PRUNEBENCH_DATASETS": str(catalog),
               "PRUNEBENCH_STORE_DIR": str(self.root / "store"), "PRUNEBENCH_CACHE_DIR": str(self.root / "cache"),
               "PRUNEBENCH_BUILTIN_ASSETS": "1", "PRUNEBENCH_AUTH_DISABLED": "1", "PRUNEBENCH_LOG_JSON": "0",
               "PRUNEBENCH_FANOUT": "1", "OMP_NUM_THREADS": str(threads)}  # fmt: skip
        env.pop("PRUNEBENCH_API_KEYS", None)
        self.children = Supervisor(self.root / "logs")
        self.port = free_port()
        me = [sys.executable, "-m", "prunebench.cli"]
        self.children.start("api", [*me, "serve", "--host", "127.0.0.1", "--port", str(self.port)], env)
        for k in range(workers):
            self.children.start(f"worker{k}", [*me, "worker"], env)
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as http:
            wait_ready(http, self.children, workers, timeout_s=180.0)

    def job(self) -> dict[str, Any]:
        """One sweep (dense + 0.3, 0.5, 0.7; no result cache): seconds, pure inference, mAPs."""
        import httpx

        from prunebench.contract import TERMINAL_STATUSES

        request = {"checkpoint": CHECKPOINT.name, "dataset": SERVICE_DATASET, "sparsities": list(SPARSITIES[1:]),
                   "img_size": 320, "batch_size": 32, "device": "cpu", "use_cache": False}  # fmt: skip
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            started = time.perf_counter()
            submitted = http.post("/v1/jobs", json=request)
            if submitted.status_code != 202:
                raise SystemExit(f"submit refused ({submitted.status_code}): {submitted.text}")
            job_id = submitted.json()["id"]
            while (status := http.get(f"/v1/jobs/{job_id}").json())["status"] not in TERMINAL_STATUSES:
                time.sleep(0.2)  # a dashboard's pace; faster polling would take CPU from the job it times
            seconds = time.perf_counter() - started
            if status["status"] != "succeeded":
                raise SystemExit(f"service job {job_id} {status['status']}: {status.get('error')}")
            result = http.get(f"/v1/jobs/{job_id}/result").raise_for_status().json()
        return _summary(result, seconds)

    def close(self) -> None:
        self.children.stop()
        self.redis.stop()


def _summary(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    inference = sum(r["speed_ms_per_image"]["inference"] * r["images"] / 1000 for r in result["runs"])
    return {
        "seconds": seconds,
        "inference": inference,
        "maps": {r["sparsity_target"]: r["metrics"]["map"] for r in result["runs"]},
    }


def measure_floor(images: Path, annotations: Path) -> float:
    """The floor, measured on its own: the four points' forward passes alone, back to back, in this process.

    Each point's model is pruned as a job prunes it (fused, then upstream's per-layer L1), the images
    decoded and letterboxed into the job's rectangular batches before the clock runs, then only the
    ``model(batch)`` calls are timed (torch at its default thread count, as a single worker runs).
    """
    import copy

    import torch

    from prunebench.datasets.catalog import DatasetSpec
    from prunebench.worker.engine import pruning
    from prunebench.worker.engine.checkpoints import load_model
    from prunebench.worker.engine.data import decode_dataset, grid_stride, make_batches
    from prunebench.worker.engine.evaluate import default_infer, load_batch, to_input

    loaded = load_model(CHECKPOINT)
    dense = loaded.model.float().eval().fuse()
    decoded = decode_dataset(DatasetSpec(name="floor", images_dir=images, annotations=annotations), 320)
    batches = [load_batch(decoded, b, pin=False) for b in make_batches(decoded, 32, grid_stride(max(loaded.stride)))]
    inputs = [to_input(b.host, torch.device("cpu"), False) for b in batches]
    seconds = 0.0
    with torch.no_grad():
        for sparsity in SPARSITIES:
            model = copy.deepcopy(dense)
            if sparsity:
                pruning.apply_pruning(model, "l1_unstructured", sparsity, [])
            default_infer(model, inputs[0][:1])  # one untimed image: first-call allocations
            started = time.perf_counter()
            for x in inputs:
                default_infer(model, x)
            seconds += time.perf_counter() - started
    return seconds


def rescore(predictions: Path, annotations: Path) -> float:
    """mAP@.5:.95 of upstream's predictions JSON at full precision (val.py prints 3 decimals).

    Upstream writes no JSON when it has no detection at all (``len(jdict)`` is 0): its mAP is then 0.
    """
    if not predictions.is_file():
        return 0.0
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        evaluator = COCOeval(gt, gt.loadRes(str(predictions)), "bbox")
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="a YOLOv5 clone or git dir holding the commit")
    parser.add_argument("--upstream-python", type=Path, required=True, help="python of a venv with upstream's deps")
    parser.add_argument("--images", type=int, choices=(120, 250), default=120)
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    parser.add_argument(
        "--service",
        nargs="*",
        default=["1x2", "2x1"],
        help="service configurations WORKERSxTHREADS to time (none: skip the service rows)",
    )
    args = parser.parse_args()

    configs = [tuple(int(v) for v in c.split("x")) for c in args.service]
    with tempfile.TemporaryDirectory(prefix="prunebench-vs-upstream-") as scratch:
        work = Path(scratch)
        upstream = checkout_upstream(args.upstream, work)
        offline_config(args.upstream_python, work)
        data_yaml, images, annotations = build_dataset(work, args.images, args.reference)
        warm_cache = work / "cache-warm"
        run_prunebench(images, annotations, warm_cache)  # fill the warm cache once, untimed
        services = {f"{w}x{t}": Service(work, images, annotations, w, t) for w, t in configs}
        try:
            for service in services.values():
                service.job()  # warm-up: the worker's first job fills its decode cache
            rounds = [_round(k, args, upstream, data_yaml, images, annotations, work, warm_cache, services)
                      for k in range(args.rounds)]  # fmt: skip
        finally:
            for service in services.values():
                service.close()
        upstream_maps = {
            s: rescore(u["predictions"], annotations) for s, u in zip(SPARSITIES, rounds[-1]["upstream"], strict=True)
        }
        report(rounds, upstream_maps, args, os.getloadavg())
        if args.json:
            for r in rounds:
                for u in r["upstream"]:
                    u["predictions"] = str(u["predictions"])
            args.json.write_text(json.dumps({"rounds": rounds, "upstream_maps": upstream_maps}, indent=1))


def _round(
    k: int,
    args: argparse.Namespace,
    upstream: Path,
    data_yaml: Path,
    images: Path,
    annotations: Path,
    work: Path,
    warm_cache: Path,
    services: dict[str, Service],
) -> dict[str, Any]:
    """One interleaved round: four val.py processes, the CLI cold and warm, each service, the floor."""
    ups = [run_upstream(args.upstream_python, upstream, data_yaml, work, s) for s in SPARSITIES]
    done: dict[str, Any] = {"upstream": ups}
    done["cold"] = run_prunebench(images, annotations, work / f"cache-cold-{k}")
    done["warm"] = run_prunebench(images, annotations, warm_cache)
    done["services"] = {name: service.job() for name, service in services.items()}
    done["floor"] = measure_floor(images, annotations)
    line = f"round {k + 1}: upstream {sum(u['seconds'] for u in ups):.1f} s, prunebench cold "
    line += f"{done['cold']['seconds']:.1f} s, warm {done['warm']['seconds']:.1f} s"
    line += "".join(f", service {n} {r['seconds']:.1f} s" for n, r in done["services"].items())
    print(f"{line}, floor {done['floor']:.1f} s", flush=True)
    return done


def report(
    rounds: list[dict[str, Any]],
    upstream_maps: dict[float, float],
    args: argparse.Namespace,
    load: tuple[float, float, float],
) -> None:
    def median(pick: Any) -> float:
        return statistics.median(pick(r) for r in rounds)

    up = median(lambda r: sum(u["seconds"] for u in r["upstream"]))
    floor = median(lambda r: r["floor"])
    rows = [("prunebench eval (CLI process), cold decode cache", lambda r: r["cold"]),
            ("prunebench eval (CLI process), warm decode cache", lambda r: r["warm"])]  # fmt: skip
    for name in rounds[0]["services"]:
        workers, threads = name.split("x")
        label = f"service job over HTTP, {workers} warm worker{'s' if workers != '1' else ''} x {threads} threads"
        rows.append((label, lambda r, n=name: r["services"][n]))
    limit = any(u["nms_limit"] for r in rounds for u in r["upstream"])
    print()
    print(f"{args.images} images, img 320, batch 32, CPU, sparsities {list(SPARSITIES)}, {args.rounds} rounds "
          f"(medians); load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print()
    print("| run | seconds | vs upstream | wall / floor | inference stage (s) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| upstream: four `val.py` processes | {up:.1f} | 1.00x | | |")
    for label, pick in rows:
        seconds = median(lambda r, p=pick: p(r)["seconds"])
        inference = median(lambda r, p=pick: p(r)["inference"])
        print(f"| {label} | {seconds:.1f} | {up / seconds:.2f}x | {seconds / floor:.2f} | {inference:.1f} |")
    print(f"| floor: the forward passes alone | {floor:.1f} | | 1.00 | |")
    print()
    print("| sparsity | upstream mAP@.5:.95 | prunebench CLI | service | equal |")
    print("|---:|---:|---:|---:|:---:|")
    ours = rounds[-1]["warm"]["maps"]
    served = [r["maps"] for r in rounds[-1]["services"].values()]
    for s in SPARSITIES:
        values = [ours[s], *(m[s] for m in served)]
        equal = "yes" if all(abs(upstream_maps[s] - v) < 1e-9 for v in values) else "NO"
        service = " / ".join(f"{m[s]:.6f}" for m in served) or "-"
        print(f"| {s:g} | {upstream_maps[s]:.6f} | {ours[s]:.6f} | {service} | {equal} |")
    print()
    print(f"upstream's NMS time limit fired: {'yes (its detections were cut)' if limit else 'no'}")


if __name__ == "__main__":
    main()
