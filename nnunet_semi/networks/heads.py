"""Heads attached to a segmentation network for pre-training.

CCM (Zhou, Gu, Zhang, Wang, "Self-supervised pre-training based on contrastive complementary masking for semi-supervised
cardiac image segmentation", Sec. 2.1 and 3.1) adds a projector ``h`` after each encoder ``f`` to obtain the global
features ``Z_i = h(f(X_i))`` of eq. 2: "a projector consisting of two linear layers after each encoder to obtain global
features with a dimension of 1000". The encoder's deepest feature map is reduced to a vector by global average pooling
first.
"""
from typing import Optional

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Global average pooling of the deepest encoder stage + ``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``.

    Args:
        in_channels: channels ``C`` of the feature map.
        hidden_dim: width of the hidden layer (default: ``in_channels``).
        out_dim: dimension of ``Z`` (paper: 1000).
        batch_norm: put a ``BatchNorm1d`` after the hidden layer (as SimCLR's reference implementation does). It
            matters after nnU-Net's InstanceNorm encoders: their globally pooled features are nearly the same vector
            for every image (cosine > 0.99 at initialisation), so without it NT-Xent starts on a collapsed saddle
            at chance level and barely moves (see ``tests/unit/test_mmgl_pieces.py``).

    ``forward(feature_map)`` takes ``(B, C, *spatial)`` (2D or 3D) and returns ``(B, out_dim)``.
    """

    def __init__(self, in_channels: int, hidden_dim: Optional[int] = None, out_dim: int = 1000,
                 batch_norm: bool = False):
        super().__init__()
        hidden_dim = in_channels if hidden_dim is None else hidden_dim
        for name, value in (("in_channels", in_channels), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.in_channels = int(in_channels)
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_dim), *norm, nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if feature_map.ndim < 3 or feature_map.shape[1] != self.in_channels:
            raise ValueError(f"expected a feature map (B, {self.in_channels}, *spatial), got shape "
                             f"{tuple(feature_map.shape)}")
        pooled = feature_map.flatten(2).mean(-1)  # adaptive average pooling to 1 voxel, any number of dims
        return self.mlp(pooled)


class LocalProjectionHead(nn.Module):
    """Dense projection head of MMGL's local contrastive learning (Zhao et al., "MMGL: Multi-scale multi-view
    global-local contrastive learning for semi-supervised cardiac image segmentation", ICIP 2022, arXiv:2207.01883;
    Sec. 4.1: "one project head on top of each decoder block consisting of two 1 x 1 convolutional layers"):
    ``Conv1x1(in, hidden) -> ReLU -> Conv1x1(hidden, out)``, 2D or 3D (``conv_op``)."""

    def __init__(self, in_channels: int, out_dim: int = 128, hidden_dim: Optional[int] = None,
                 conv_op=nn.Conv2d):
        super().__init__()
        hidden_dim = in_channels if hidden_dim is None else hidden_dim
        for name, value in (("in_channels", in_channels), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.net = nn.Sequential(conv_op(in_channels, hidden_dim, kernel_size=1), nn.ReLU(inplace=True),
                                 conv_op(hidden_dim, out_dim, kernel_size=1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map)
