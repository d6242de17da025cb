"""NMS keeps upstream's semantics: objectness gate, multi-label, per-class suppression, caps, no time limit."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunebench.worker.engine.nms import MAX_WH, nms_image, non_max_suppression, xywh_to_xyxy


def _row(cx: float, cy: float, w: float, h: float, obj: float, *cls: float) -> list[float]:
    return [cx, cy, w, h, obj, *cls]


def test_xywh_to_xyxy() -> None:
    out = xywh_to_xyxy(torch.tensor([[10.0, 20.0, 4.0, 6.0]]))
    assert out.tolist() == [[8.0, 17.0, 12.0, 23.0]]


def test_objectness_gate_and_score_product() -> None:
    x = torch.tensor([_row(50, 50, 10, 10, 0.5, 0.8, 0.1), _row(150, 150, 10, 10, 0.001, 1.0, 0.0)])
    det = nms_image(x, conf_thres=0.01, iou_thres=0.6, max_det=300)
    # Second row fails objectness (> conf, strictly); first row: class 0 at 0.4, class 1 at 0.05.
    assert det.shape == (2, 6)
    assert det[:, 4].tolist() == torch.tensor([0.4, 0.05]).tolist()
    assert det[:, 5].tolist() == [0.0, 1.0]
    assert det[0, :4].tolist() == [45.0, 45.0, 55.0, 55.0]


def test_multi_label_rows_survive_each_other() -> None:
    # Same box, two classes above threshold: both kept, since suppression is per class.
    x = torch.tensor([_row(50, 50, 10, 10, 0.9, 0.9, 0.8)])
    det = nms_image(x, 0.25, 0.45, 300)
    assert det[:, 5].tolist() == [0.0, 1.0]


def test_same_class_overlap_is_suppressed_other_class_is_not() -> None:
    x = torch.tensor(
        [
            _row(50, 50, 20, 20, 0.9, 1.0, 0.0),
            _row(51, 51, 20, 20, 0.8, 1.0, 0.0),  # overlaps the first, same class -> dropped
            _row(51, 51, 20, 20, 0.7, 0.0, 1.0),  # same place, other class -> kept
        ]
    )
    det = nms_image(x, 0.25, 0.6, 300)
    assert det[:, 4].tolist() == torch.tensor([0.9, 0.7]).tolist()
    assert det[:, 5].tolist() == [0.0, 1.0]


def test_single_class_model_uses_best_score() -> None:
    x = torch.tensor([_row(50, 50, 20, 20, 0.9, 0.5), _row(200, 50, 20, 20, 0.9, 0.01)])
    det = nms_image(x, 0.25, 0.6, 300)
    assert det.shape == (1, 6)
    assert det[0, 4].item() == torch.tensor(0.45).item()


def test_max_det_and_no_time_limit() -> None:
    # 5000 disjoint boxes: all survive NMS (no wall-clock cut-off), max_det caps the output.
    n = 5000
    cx = (torch.arange(n) % 100).float() * 30 + 15
    cy = (torch.arange(n) // 100).float() * 30 + 15
    scores = torch.linspace(0.99, 0.5, n)
    x = torch.stack((cx, cy, torch.full((n,), 10.0), torch.full((n,), 10.0), scores, torch.ones(n)), 1)
    assert nms_image(x, 0.001, 0.6, 30000).shape[0] == n
    capped = nms_image(x, 0.001, 0.6, 300)
    assert capped.shape[0] == 300
    assert torch.equal(capped[:, 4], scores[:300])


def test_empty_and_batch() -> None:
    x = torch.zeros((2, 10, 7))
    x[1, 0] = torch.tensor(_row(50, 50, 10, 10, 0.9, 0.9, 0.0))
    out = non_max_suppression(x, 0.25, 0.45, 300)
    assert [d.shape[0] for d in out] == [0, 1]
    assert out[0].shape == (0, 6)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(x: torch.Tensor, conf: float, iou: float) -> set[tuple[float, ...]]:
    """Plain greedy per-class NMS over multi-label candidates, straight from the definition."""
    cands = []
    for row in x.tolist():
        if row[4] <= conf:
            continue
        box = xywh_to_xyxy(torch.tensor([row[:4]]))[0].tolist()
        for c, p in enumerate(row[5:]):
            s = torch.tensor(p, dtype=torch.float32) * torch.tensor(row[4], dtype=torch.float32)
            if s.item() > conf:
                cands.append((box, s.item(), c))
    cands.sort(key=lambda t: -t[1])
    kept: list[tuple[list[float], float, int]] = []
    for box, s, c in cands:
        if all(k[2] != c or _iou(box, k[0]) <= iou for k in kept):
            kept.append((box, s, c))
    return {(*[round(v, 3) for v in b], round(s, 6), c) for b, s, c in kept}


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 60), st.integers(0, 60), st.integers(2, 30), st.integers(2, 30),
            st.sampled_from([0.05, 0.3, 0.55, 0.8, 0.95]),
            st.sampled_from([0.0, 0.2, 0.6, 0.9]), st.sampled_from([0.0, 0.4, 0.7, 1.0]),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda r: r[4],  # distinct objectness keeps score ties (and their arbitrary order) out
    ),
    iou=st.sampled_from([0.3, 0.5, 0.7]),
)  # fmt: skip
def test_matches_reference_nms(rows: list[tuple[float, ...]], iou: float) -> None:
    x = torch.tensor(rows, dtype=torch.float32)
    det = nms_image(x.clone(), 0.1, iou, 300)
    got = {(*[round(v, 3) for v in r[:4]], round(r[4], 6), int(r[5])) for r in det.tolist()}
    expected = _reference(x, 0.1, iou)
    # Ties in score between classes may order differently but the kept set must agree.
    assert got == expected
    assert det[:, 4].tolist() == sorted(det[:, 4].tolist(), reverse=True)


def test_class_offset_is_large() -> None:
    assert MAX_WH == 7680


# ---------------------------------------------------------------------------------------------------------
# The batched path equals the per-image definition, detection for detection and in the same order.


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    n=st.integers(0, 40),
    nc=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
    max_det=st.sampled_from([1, 3, 300]),
    coarse=st.booleans(),  # few distinct values: many exact score ties and identical boxes
)
def test_batched_equals_per_image(batch: int, n: int, nc: int, seed: int, max_det: int, coarse: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, n, 5 + nc), generator=gen)
    x[..., :2] *= 64
    x[..., 2:4] = x[..., 2:4] * 30 + 2
    if coarse:
        x = (x * 4).round() / 4
    got = non_max_suppression(x, 0.1, 0.5, max_det)
    expected = [nms_image(xi, 0.1, 0.5, max_det) for xi in x]
    assert len(got) == batch
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


def test_prefix_growth_keeps_max_det_exactly(monkeypatch) -> None:
    """Far more candidates than the first prefix and than max_det: the prefix rule must not change a thing."""
    import prunebench.worker.engine.nms as nms

    gen = torch.Generator().manual_seed(7)
    x = torch.rand((2, 4000, 7), generator=gen)
    x[..., :2] *= 320
    x[..., 2:4] = x[..., 2:4] * 40 + 2
    monkeypatch.setattr(nms, "PREFIX_START", 16)  # force several growth steps
    for max_det in (10, 300, 30000):
        got = non_max_suppression(x, 0.001, 0.6, max_det)
        for g, xi in zip(got, x, strict=True):
            assert torch.equal(g, nms_image(xi, 0.001, 0.6, max_det))


def test_the_kernel_is_torchvisions_without_importing_torchvision() -> None:
    """The engine registers torchvision's NMS kernel alone; a fresh process never imports torchvision."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from prunebench.worker.engine.nms import torchvision_nms\n"
        "boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])\n"
        "print(torchvision_nms()(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist(), 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["[0,", "2]", "False"]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_the_kernel_equals_torchvision_ops_nms(n: int, seed: int, iou: float) -> None:
    import torchvision

    from prunebench.worker.engine.nms import torchvision_nms

    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 100
    boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=gen) * 40), 1)
    scores = torch.rand(n, generator=gen)
    assert torch.equal(torchvision_nms()(boxes, scores, iou), torchvision.ops.nms(boxes, scores, iou))
