"""One vehicle's local round with an optional attack: the four hooks of
:class:`bmfl.attacks.base.Attack` around ``bmfl.training.train_local``."""

from __future__ import annotations

import torch
from torch import nn

from bmfl.attacks.base import Attack, AttackContext
from bmfl.data.base import TensorData
from bmfl.params import flatten, load_vector
from bmfl.privacy.accountant import PrivacyAccountant
from bmfl.training.local import LocalTrainingConfig, train_local


def local_upload(
    model: nn.Module,
    data: TensorData,
    config: LocalTrainingConfig,
    context: AttackContext,
    attack: Attack | None = None,
    accountant: PrivacyAccountant | None = None,
) -> torch.Tensor:
    """Train ``model`` (in place) from the attack's start vector on its (possibly
    poisoned) data and return the flat upload, poisoned if ``attack`` is given.
    DP steps are recorded in ``accountant`` when given. An attack with
    ``trains = False`` is applied to w^{r-1} without training (its upload ignores it)."""
    attack = attack or Attack()
    if not attack.trains:
        return attack.poison_update(context.reference.clone(), context)
    local_data = attack.poison_data(data, context.generator)
    local_config = attack.training_config(config)
    load_vector(model, attack.start_vector(context))
    result = train_local(model, local_data, local_config, context.generator, accountant)
    return attack.poison_update(flatten(result.state), context)
