"""The fixed scattering front end (``bmfl.models.scatter``) and the feature cache
(``bmfl.models.features``): known answers of the filter bank and the subsampling, the
coefficients against a direct full-resolution computation, and DP-SGD on mapped
inputs equal to DP-SGD through the whole model."""

import copy

import pytest
import torch
from torch.func import functional_call, grad, vmap

from bmfl.data import TensorData
from bmfl.models import count_parameters, create_model
from bmfl.models import features as feature_cache
from bmfl.models.features import features, featurized
from bmfl.models.scatter import Scattering2D, _fold
from bmfl.params import flatten, get_state
from bmfl.training import LocalTrainingConfig, train_fleet, train_local
from bmfl.training.ghost import clipped_sum
from bmfl.training.local import _clipped_sum, loss_function


def _digits(n: int, seed: int) -> torch.Tensor:
    """Blurred random strokes on a constant background, shaped like MNIST."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, 28, 28), -0.42)
    x[:, :, 6:22, 6:22] += 2.8 * (torch.rand(n, 1, 16, 16, generator=g) > 0.7)
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _reference(s: Scattering2D, x: torch.Tensor) -> torch.Tensor:
    """The same coefficients with every map kept at full resolution until the final
    average, sampled every 4th pixel in space (no Fourier-domain subsampling)."""
    k, p = s.orientations, s.pad
    x_hat = torch.fft.fft2(torch.nn.functional.pad(x, [p] * 4, mode="replicate")[:, 0]).unsqueeze(1)
    u1 = torch.fft.ifft2(x_hat * s.psi_hat).abs()
    u2 = torch.fft.ifft2(torch.fft.fft2(u1[:, :k]).unsqueeze(2) * s.psi_hat[k:]).abs().flatten(1, 2)
    maps = torch.cat([torch.fft.ifft2(x_hat).real, u1, u2], dim=1)
    avg = torch.fft.ifft2(torch.fft.fft2(maps) * s.phi_hat).real
    return avg[..., 4 : 4 + 28 : 4, 4 : 4 + 28 : 4]


def test_fold_is_subsampling_in_the_fourier_domain():
    z = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in (2, 4):
        sub = torch.fft.ifft2(_fold(torch.fft.fft2(z), k)).real / k**2
        assert torch.allclose(sub, z[:, ::k, ::k], atol=1e-12)


def test_the_filter_bank_is_band_pass_wavelets_and_one_averaging_filter():
    s = Scattering2D()
    assert s.psi_hat.shape == (16, 32, 32)
    assert s.psi_hat[:, 0, 0].abs().max() < 1e-6  # every wavelet has mean zero
    assert abs(complex(s.phi_hat[0, 0]) - 1) < 1e-6  # the average keeps the mean
    peaks = s.psi_hat.abs().flatten(1).argmax(1)  # 8 orientations: 8 distinct peaks per scale
    assert len(set(peaks[:8].tolist())) == 8 and len(set(peaks[8:].tolist())) == 8


def test_a_constant_image_has_only_its_average():
    out = Scattering2D()(torch.full((2, 1, 28, 28), 0.7))
    assert out.shape == (2, 81, 7, 7)
    assert torch.allclose(out[:, 0], torch.full((2, 7, 7), 0.7), atol=1e-5)
    assert out[:, 1:].abs().max() < 1e-5


def test_coefficients_match_the_full_resolution_computation():
    s = Scattering2D()
    x = _digits(4, 1)
    ours, reference = s(x), _reference(s, x)
    for part in (slice(0, 1), slice(1, 17), slice(17, 81)):  # orders 0, 1, 2
        err = (ours[:, part] - reference[:, part]).norm() / reference[:, part].norm()
        assert err < 0.05, (part, float(err))


def test_a_one_pixel_shift_moves_the_coefficients_far_less_than_the_pixels():
    s, x = Scattering2D(), _digits(8, 2)
    shifted = torch.roll(x, 1, dims=-1)
    moved_pixels = ((shifted - x).norm() / x.norm()).item()
    moved_features = ((s(shifted) - s(x))[:, 1:].norm() / s(x)[:, 1:].norm()).item()
    assert moved_features < 0.5 * moved_pixels


def test_only_the_classifier_is_trained_and_sent():
    model = create_model("scatter_linear")
    assert count_parameters(model) == 81 * 49 * 10 + 10 == 39_700
    assert list(get_state(model)) == ["fc.weight", "fc.bias"]  # filters never enter a blob
    x = _digits(5, 3)
    assert torch.allclose(model(x), model(model.fixed_features(x)), atol=1e-6)
    assert torch.allclose(model(x[:1]), model(x)[:1], atol=1e-5)  # each sample on its own


def test_the_feature_cache_maps_each_input_once_and_stays_within_its_budget(monkeypatch):
    model, x = create_model("scatter_linear"), _digits(6, 4)
    first = features(model, x)
    assert features(model, x.clone()) is first  # same bytes, another tensor: a hit
    assert not torch.equal(features(model, _digits(6, 5)), first)
    assert features(model, first) is first  # already mapped
    cnn = create_model("bmfl_cnn")
    assert features(cnn, x) is x and featurized(cnn, TensorData(x, torch.zeros(6, dtype=torch.long), 10)).x is x
    monkeypatch.setenv("BMFL_FEATURE_CACHE_MB", "0.1")  # room for 6 images' features (95 KiB), not 12
    features(model, _digits(6, 6))
    assert feature_cache._held <= 0.1 * 2**20
    big = _digits(12, 7)
    assert features(model, big) is not features(model, big)  # too big to keep: computed, not stored
    assert torch.equal(features(model, big), model.fixed_features(big))


def test_ghost_clipping_on_mapped_inputs_equals_per_sample_clipping_through_the_whole_model():
    torch.manual_seed(0)
    model = create_model("scatter_linear")
    data = TensorData(_digits(10, 8), torch.randint(0, 10, (10,)), 10)
    params = {k: p.detach() for k, p in model.named_parameters()}
    loss_sum = loss_function(data, model)

    def sample_loss(p, xi, yi):
        return loss_sum(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    whole = _clipped_sum(vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, data.x, data.y), 0.5)
    mapped = featurized(model, data)
    ours = clipped_sum(model, loss_sum, 1.0)(params, mapped.x, mapped.y, torch.ones(10), 0.5)
    for k in whole:
        assert torch.allclose(ours[k], whole[k], rtol=1e-4, atol=1e-6)


def test_dp_training_of_the_fleet_equals_each_vehicle_alone():
    model = create_model("scatter_linear")
    data = [TensorData(_digits(n, 9 + n), torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(n)), 10)
            for n in (40, 12)]  # fmt: skip
    config = LocalTrainingConfig(epochs=1, batch_size=8, lr=0.5, noise_multiplier=1.0)
    fleet = train_fleet(model, data, config, [torch.Generator().manual_seed(i) for i in range(2)])
    alone = [train_local(copy.deepcopy(model), d, config, torch.Generator().manual_seed(i)) for i, d in enumerate(data)]
    for f, a in zip(fleet, alone):
        assert f.steps == a.steps > 0
        assert torch.allclose(flatten(f.state), flatten(a.state), atol=1e-5)
    assert not torch.equal(flatten(fleet[0].state), flatten(model.state_dict()))


def test_scatter_linear_refuses_colour_images():
    with pytest.raises(ValueError, match="1-channel"):
        create_model("scatter_linear", in_channels=3)


def test_the_simulated_fleet_maps_its_training_set_once_and_trains_as_on_raw_rows():
    from bmfl.attacks import AttackContext, PixelBackdoor, SignFlip
    from bmfl.privacy import PrivacyEngine
    from bmfl.simulation.vehicles import Fleet, InProcess, train_vehicles

    model = create_model("scatter_linear")
    train = TensorData(_digits(30, 11), torch.randint(0, 10, (30,), generator=torch.Generator().manual_seed(1)), 10)
    parts = [torch.arange(0, 12), torch.arange(12, 20), torch.arange(20, 30)]
    config = LocalTrainingConfig(epochs=1, batch_size=4, lr=0.5, noise_multiplier=1.0)
    backdoor = PixelBackdoor(epochs=1)
    fleet = Fleet(model, train, parts, config, backdoor, frozenset({2}), seed=3, reproducible=True, delta=1e-5, accountant="rdp")
    assert fleet.data(0).x.shape[1:] == model.feature_shape
    assert torch.equal(fleet.data(1).x, model.fixed_features(train.x)[12:20])  # rows of one map of the whole set
    assert fleet.data(2).x.shape[1:] == (1, 28, 28)  # the backdoor writes its trigger into pixels
    flipper = Fleet(model, train, parts, config, SignFlip(), frozenset({2}), 3, True, 1e-5, "rdp")
    assert flipper.data(2).x.shape[1:] == model.feature_shape  # its data is its own: the map serves it
    reference = flatten(model.state_dict())
    ours = next(InProcess(fleet).train([0, 1, 2], 1, reference, None, [0, 0, 0]))
    gens = [torch.Generator().manual_seed(fleet.generators[v].initial_seed()) for v in range(3)]
    raw = train_vehicles(
        model, [train.subset(p) for p in parts], config, [0, 1, 2],
        [AttackContext(reference, g, None, 1, v, 0) for v, g in enumerate(gens)], [None, None, backdoor],
        [PrivacyEngine(1e-5) for _ in range(3)],
    )  # fmt: skip
    for a, b in zip(ours.uploads, raw.uploads):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.equal(ours.uploads[0], reference)
    before = fleet.data(0).x.clone()
    fleet.release_inputs(sigma=1.0, clip=3.0, targets=False)  # input DP perturbs pixels, then the map is redone
    assert fleet.train.x.shape[1:] == (1, 28, 28)
    assert fleet.data(0).x.shape[1:] == model.feature_shape and not torch.equal(fleet.data(0).x, before)
    assert torch.equal(fleet.data(1).x, model.fixed_features(fleet.train.x)[12:20])
