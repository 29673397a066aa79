import pytest
import torch

from bmfl.partition import by_group, complete_non_iid, dirichlet, iid, make_partition

LABELS = torch.arange(2000) % 10


def _disjoint_cover(partition, n):
    flat = torch.cat(partition.indices)
    return len(flat) == n and len(flat.unique()) == n


def test_iid_sizes_and_determinism():
    p = iid(1003, 10, seed=1)
    assert sorted(p.sizes) == [100] * 7 + [101] * 3
    assert _disjoint_cover(p, 1003)
    assert all(torch.equal(a, b) for a, b in zip(p.indices, iid(1003, 10, seed=1).indices))
    assert not all(torch.equal(a, b) for a, b in zip(p.indices, iid(1003, 10, seed=2).indices))


def test_complete_non_iid_two_classes_each_and_power_law_sizes():
    p = complete_non_iid(LABELS, 50, seed=0)
    hist = p.label_histograms(LABELS, 10)
    assert ((hist > 0).sum(1) == 2).all()
    assert _disjoint_cover(p, 2000)
    sizes = torch.tensor(p.sizes).float()
    assert sizes.max() > 3 * sizes.median()  # heavy tail, not equal shares
    again = complete_non_iid(LABELS, 50, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(p.indices, again.indices))


def test_dirichlet_skew_min_size_and_determinism():
    p = dirichlet(LABELS, 20, seed=0, alpha=0.9, min_size=10)
    assert _disjoint_cover(p, 2000) and min(p.sizes) >= 10
    hist = p.label_histograms(LABELS, 10).float()
    shares = hist / hist.sum(1, keepdim=True)
    assert shares.max(1).values.mean() > 0.25  # far from the IID share of 0.1
    assert all(torch.equal(a, b) for a, b in zip(p.indices, dirichlet(LABELS, 20, 0, alpha=0.9).indices))
    with pytest.raises(ValueError, match="no Dirichlet"):
        dirichlet(LABELS[:30], 20, alpha=0.01, seed=0, min_size=10, max_tries=5)


def test_by_group_and_registry():
    groups = torch.tensor([0, 1, 1, 2, 0, 2])
    assert [i.tolist() for i in by_group(groups, 3).indices] == [[0, 4], [1, 2], [3, 5]]
    assert make_partition("dirichlet", LABELS, 5, seed=0, alpha=100.0).sizes != []
    with pytest.raises(ValueError, match="unknown partition"):
        make_partition("zipf", LABELS, 5, seed=0)


def test_report_lists_every_device():
    p = iid(100, 4, seed=0)
    report = p.report(LABELS[:100], 10)
    assert report.count("\n") == 3 and "25 samples" in report
