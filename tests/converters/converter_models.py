"""Tiny models the converter tests build themselves (no downloads)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """A small image classifier for 1x8x8 inputs (sklearn digits), 10 classes."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels * 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(channels * 2 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))


class TinyMLP(nn.Module):
    """A small MLP over 64 features, 10 classes."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyEncoder(nn.Module):
    """A one-layer transformer encoder over int64 token ids (attention, layer norm, GELU), 4 classes."""

    vocab = 32

    def __init__(self, dim: int = 32, heads: int = 2, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.encoder(self.embed(input_ids)))
        return self.head(hidden.mean(dim=1))


@torch.library.custom_op("edgefleet_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An operator no exporter knows."""
    return x * 2


@mystery.register_fake
def _mystery_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class MysteryModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mystery(self.linear(x))


def mystery_model() -> nn.Module:
    """A model using an operator that no exporter can translate."""
    return MysteryModel().eval()


class TinyBert(nn.Module):
    """A BERT-style sentence classifier built from a `transformers` config (random weights, nothing
    downloaded): 2 layers, width 64, returns the logits."""

    vocab = 128

    def __init__(self, layers: int = 2, width: int = 64, max_positions: int = 64) -> None:
        from transformers import BertConfig, BertForSequenceClassification

        super().__init__()
        config = BertConfig(
            vocab_size=self.vocab,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=width * 2,
            max_position_embeddings=max_positions,
            num_labels=3,
        )
        torch.manual_seed(0)
        self.bert = BertForSequenceClassification(config).eval()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).logits
