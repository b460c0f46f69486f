"""Network pieces shared by the methods: the dual-network wrapper (CPS-style methods), the shared-encoder
two-decoder network (IDEAL, MC-Net-style methods), projection heads, pretrained-weight loading, output helpers."""
from nnunet_semi.networks.dual import DualNetwork, fuse_softmax_logits, unwrap
from nnunet_semi.networks.heads import ProjectionHead
from nnunet_semi.networks.pretrained import (PretrainedWeightsError, load_into_planned_networks,
                                             load_pretrained_networks, planned_networks)

__all__ = ["DualNetwork", "PretrainedWeightsError", "ProjectionHead", "fuse_softmax_logits",
           "load_into_planned_networks", "load_pretrained_networks", "planned_networks", "unwrap"]
