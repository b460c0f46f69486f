"""Network pieces shared by the methods: the dual-network wrapper (CPS-style methods), the shared-encoder
two-decoder network (IDEAL, MC-Net-style methods), projection heads, output helpers. Loading pretrained weights into
them: :mod:`nnunet_semi.pretrained`."""
from nnunet_semi.networks.dual import DualNetwork, fuse_softmax_logits, unwrap
from nnunet_semi.networks.heads import ProjectionHead

__all__ = ["DualNetwork", "ProjectionHead", "fuse_softmax_logits", "unwrap"]
