"""One vehicle's local round with an optional attack (BMFL Algorithm 1 with the four
hooks of :class:`bmfl.attacks.base.Attack`): the fleet path, ``fleet_uploads``, with a
fleet of one. There is no separate single-vehicle implementation."""

from __future__ import annotations

import torch
from torch import nn

from bmfl.attacks.base import Attack, AttackContext
from bmfl.data.base import TensorData
from bmfl.privacy.accountant import PrivacyAccountant
from bmfl.privacy.engine import PrivacyEngine
from bmfl.training.fleet import fleet_uploads
from bmfl.training.local import LocalTrainingConfig


def local_upload(
    model: nn.Module,
    data: TensorData,
    config: LocalTrainingConfig,
    context: AttackContext,
    attack: Attack | None = None,
    privacy: PrivacyEngine | PrivacyAccountant | None = None,
) -> torch.Tensor:
    """``bmfl.training.fleet_uploads`` for one vehicle: the flat upload, trained from
    the attack's start vector on its (possibly poisoned) data and poisoned if ``attack``
    is given; the budget is checked and the steps recorded in ``privacy`` when given.
    ``model`` gives the architecture and is not changed."""
    return fleet_uploads(model, [data], config, [context], [attack], [privacy])[0]
