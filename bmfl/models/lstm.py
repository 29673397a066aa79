"""LSTM forecaster for wireless traffic (poisoning study ``001`` §VI-A, after FedDA):
the input is the window x_t = closeness values followed by period values (see
:func:`bmfl.data.traffic.sliding_windows`), read as a sequence of scalars; the output is
the next value v_t."""

from __future__ import annotations

import torch
from torch import nn

from bmfl.models import register_model


class LSTMForecaster(nn.Module):
    def __init__(self, input_size: int = 1, hidden_size: int = 64, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, window) → (batch, window, 1)
            x = x.unsqueeze(-1)
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


@register_model("lstm_forecaster")
def lstm_forecaster(input_size: int = 1, hidden_size: int = 64, num_layers: int = 2) -> nn.Module:
    return LSTMForecaster(input_size, hidden_size, num_layers)
