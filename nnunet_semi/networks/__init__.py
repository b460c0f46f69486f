"""Network pieces shared by the methods: the dual-network wrapper (CPS-style methods), later extra decoders and heads."""
from nnunet_semi.networks.dual import DualNetwork, fuse_softmax_logits, unwrap

__all__ = ["DualNetwork", "fuse_softmax_logits", "unwrap"]
