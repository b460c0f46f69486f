"""MMGL pretraining, stages 1 and 2 (Zhao et al., "MMGL: Multi-scale multi-view global-local contrastive learning for
semi-supervised cardiac image segmentation", ICIP 2022, arXiv:2207.01883; Sec. 3.1-3.2), and SimCLR (Chen, Kornblith,
Norouzi, Hinton, "A simple framework for contrastive learning of visual representations", ICML 2020,
arXiv:2002.05709).

Stage 1, ``-m mmgl_global`` (:class:`MMGLGlobalPretrainer`, Sec. 3.1): the encoder of the planned 2D nnU-Net with a
projection head (global average pooling + two linear layers, 128-d,
:class:`~nnunet_semi.networks.heads.ProjectionHead`) after each of the last three encoder stages. Each image of the
batch is augmented twice (:mod:`pretraining.augment`) and ``L_g^M = sum_e lambda_g^e L_g^e`` (NT-Xent, tau 0.07,
negatives gathered across DDP ranks; :func:`~nnunet_semi.losses.mmgl.multi_scale_global_loss`) with
``lambda_g = (0.2, 0.2, 0.6)`` in the paper's index order e (the encoder blocks in network order: the highest
resolution first, the deepest, lowest-resolution stage last and weighted 0.6; :func:`scale_stages`). Images: the
fold's labeled training cases (labels unused) and imagesUnlabeled, in the transaxial, coronal and sagittal views
(:class:`~nnunet_semi.data.multiview.MultiViewDataset`). Checkpoint ``network_weights``: the encoder (``encoder.*``).

Stage 2, ``-m mmgl_local`` (:class:`MMGLLocalPretrainer`, Sec. 3.2): the whole planned network, its encoder
initialised from stage 1's checkpoint (found as ``MMGLGlobalPretrain__<plans>__<cfg>/fold_<f>/checkpoint_final.pth``
or given with ``--init-from``), with a head of two 1x1 convolutions (128-d,
:class:`~nnunet_semi.networks.heads.LocalProjectionHead`) on each of the last three decoder stages. On the fold's
labeled cases (all three views) with two augmentations per image, the feature maps and the labels are sub-sampled
with stride 4 and ``L_l^M = sum_d lambda_l^d L_l^d`` (:func:`~nnunet_semi.losses.mmgl.multi_scale_local_loss`,
``lambda_l = (0.2, 0.2, 0.6)`` in the paper's index order d: the decoder blocks in network order, the lowest
resolution first, the full-resolution stage last and weighted 0.6). Checkpoint ``network_weights``: the whole
network (keys of the planned U-Net), from which ``nnUNetTrainerMMGL`` starts (stage 3,
:mod:`nnunet_semi.training.mmgl`).

``-m simclr`` (:class:`SimCLRPretrainer`): the "Global" baseline of the paper's Table 1 (SimCLR [14]) = stage 1 with
the last encoder stage only and the transaxial view only.

Ablations (paper Fig. 3), each written to its own folder (``variant_suffix``): ``multi_view=False`` (``_noMV``,
transaxial slices only, both stages), ``use_global=False`` in stage 2 (``_noMG``: the encoder starts at random, no
multi-scale global stage), and the trainer's ``_noLocal`` variant fine-tunes from stage 1 directly.

``head_batch_norm=True`` (``--head-batch-norm``; stage 1 / simclr) adds a BatchNorm1d between the two linear layers
of the global heads, as SimCLR's reference implementation does; off by default (the paper: two linear layers). It is
recommended with nnU-Net's encoders: their InstanceNorm makes the globally pooled features of all images nearly
identical at initialisation (cosine > 0.99), where NT-Xent sits at chance level (log(2B - 1)) and barely moves.

Defaults not given in the paper: Adam, lr 1e-3, cosine annealing (the shared runner), the plans' batch size, hidden
width of the heads = their input channels, augmentation ranges (:mod:`pretraining.augment`). Where our setting
differs: the network is nnU-Net's planned 2D U-Net (the paper: a 4-level U-Net on 160 x 160 slices), the images are
random patches of the plans' patch size at the configuration's spacing (the paper: slices resized to 160 x 160).
"""
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from nnunet_semi.data.multiview import VIEWS, MultiViewDataset
from nnunet_semi.losses.mmgl import (PAPER_LOCAL_STRIDE, PAPER_SCALE_WEIGHTS, PAPER_TEMPERATURE,
                                     multi_scale_global_loss, multi_scale_local_loss, subsample_with_labels)
from nnunet_semi.networks.heads import LocalProjectionHead, ProjectionHead
from nnunet_semi.pretrained import contract
from nnunet_semi.pretrained.loading import load_pretraining
from pretraining.augment import augment_2d
from pretraining.data import labeled_training_dataset
from pretraining.runner import Pretrainer, add_contrastive_arguments, contrastive_kwargs


class MultiScaleGlobalModel(nn.Module):
    """Encoder E + one projection head per chosen stage: ``forward(x) = [h_e(E(x)[e]) for e in stages]``."""

    def __init__(self, encoder: nn.Module, stages: Sequence[int], projection_dim: int, batch_norm: bool = False):
        super().__init__()
        self.encoder = encoder
        self.stages = [int(s) for s in stages]
        self.heads = nn.ModuleList(ProjectionHead(encoder.output_channels[s], out_dim=projection_dim,
                                                  batch_norm=batch_norm) for s in self.stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        skips = self.encoder(x)
        return [head(skips[s]) for head, s in zip(self.heads, self.stages)]


class MultiScaleLocalModel(nn.Module):
    """The planned U-Net + one dense head per chosen decoder stage: ``forward(x)`` = the heads' outputs on those
    stages' feature maps (read with forward hooks; the network itself runs unchanged)."""

    def __init__(self, network: nn.Module, stages: Sequence[int], projection_dim: int):
        super().__init__()
        self.network = network
        self.stages = [int(s) for s in stages]
        conv_op = network.encoder.conv_op
        self.heads = nn.ModuleList(LocalProjectionHead(network.decoder.stages[s].output_channels, projection_dim,
                                                       conv_op=conv_op) for s in self.stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = {}
        handles = [self.network.decoder.stages[s].register_forward_hook(
            lambda module, inputs, output, s=s: features.__setitem__(s, output)) for s in self.stages]
        try:
            self.network(x)
        finally:
            for handle in handles:
                handle.remove()
        return [head(features[s]) for head, s in zip(self.heads, self.stages)]


def scale_stages(weights: Sequence[float], n_available: int, what: str) -> Dict[int, float]:
    """``{stage index: weight}`` for the last ``len(weights)`` of ``n_available`` encoder / decoder stages.

    The weights are in network order, the paper's index order (e-th encoder block, d-th decoder block): weight ``i``
    goes to stage ``n_available - len(weights) + i``. Encoder (``encoder.stages``, stage 0 = full resolution): the
    highest resolution first, the deepest (lowest-resolution) stage last. Decoder (``decoder.stages``, stage 0 =
    deepest): the lowest resolution first, the full-resolution stage last. With the paper's (0.2, 0.2, 0.6) the
    deepest encoder stage and the full-resolution decoder stage get 0.6."""
    weights = tuple(float(w) for w in weights)
    if not 1 <= len(weights) <= n_available:
        raise ValueError(f"{len(weights)} {what} scale weights, but the planned network has {n_available} {what} "
                         f"stages. Fix: give between 1 and {n_available} weights (--scale-weights).")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"scale weights must be >= 0 with at least one > 0, got {list(weights)}")
    return {n_available - len(weights) + i: w for i, w in enumerate(weights)}


class _MMGLBase(Pretrainer):
    def __init__(self, *args, temperature: float = PAPER_TEMPERATURE, projection_dim: int = 128,
                 scale_weights: Sequence[float] = PAPER_SCALE_WEIGHTS, multi_view: bool = True,
                 head_batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if len(self.configuration_manager.patch_size) != 2:
            raise ValueError(f"{self.method_name} pretraining is 2D (multi-view slices), but configuration "
                             f"'{self.configuration_name}' is 3D. Fix: use -c 2d.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if projection_dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {projection_dim}")
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.multi_view = multi_view
        self.head_batch_norm = head_batch_norm
        self.scale_weights = tuple(scale_weights)
        self.views = VIEWS if multi_view else ("transaxial",)

    #: command-line options for the scale weights and the multi-view ablation (SimCLR: one scale, one view)
    multi_scale_multi_view_options = True
    #: which stages the scale weights go to, in which order (the help of --scale-weights; see scale_stages)
    scale_order = ""

    @classmethod
    def add_arguments(cls, group) -> None:
        add_contrastive_arguments(group, 128, PAPER_TEMPERATURE)
        group.add_argument("--head-batch-norm", action="store_true",
                           help="BatchNorm1d in the global projection heads (SimCLR's implementation; recommended "
                                "with nnU-Net's InstanceNorm encoders; paper: off)")
        if cls.multi_scale_multi_view_options:
            group.add_argument("--scale-weights", type=float, nargs="+", default=None,
                               help=f"lambda per scale on the last {cls.scale_order} (paper: 0.2 0.2 0.6)")
            group.add_argument("--no-multi-view", action="store_true",
                               help="ablation: transaxial slices only (output folder suffix _noMV)")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        kwargs = dict(contrastive_kwargs(args), head_batch_norm=args.head_batch_norm)
        if cls.multi_scale_multi_view_options:
            kwargs["multi_view"] = not args.no_multi_view
            if args.scale_weights:
                kwargs["scale_weights"] = args.scale_weights
        return kwargs

    def with_views(self, dataset):
        if not self.multi_view:
            return dataset
        return MultiViewDataset(dataset, self.configuration_manager.spacing, self.views)

    def hyperparameters(self) -> dict:
        return {"temperature": self.temperature, "projection_dim": self.projection_dim,
                "scale_weights": list(self.scale_weights), "stages": list(self.stages), "views": list(self.views),
                "head_batch_norm": self.head_batch_norm}


class MMGLGlobalPretrainer(_MMGLBase):
    method_name = "MMGLGlobal"
    scale_order = "encoder stages, in network order: highest resolution first, the deepest encoder stage last"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        n_stages = len(self.configuration_manager.network_arch_init_kwargs["features_per_stage"])
        per_stage = scale_stages(self.scale_weights, n_stages, "encoder")  # the deepest ones
        self.stages, self.scale_weights = list(per_stage), tuple(per_stage.values())

    def variant_suffix(self) -> str:
        return contract.mmgl_variant(self.multi_view)

    def build_dataset(self):
        return self.with_views(super().build_dataset())

    def build_model(self) -> nn.Module:
        return MultiScaleGlobalModel(self.build_planned_network(self.num_input_channels).encoder, self.stages,
                                     self.projection_dim, self.head_batch_norm)

    def network_weights(self) -> dict:
        return {k: v for k, v in super().network_weights().items() if k.startswith("encoder.")}

    def compute_loss(self, data: torch.Tensor, target: Optional[torch.Tensor] = None):
        view_1, _ = augment_2d(data)
        view_2, _ = augment_2d(data)
        z = self.model(torch.cat([view_1, view_2]))  # one forward: one DDP reducer pass
        z_1, z_2 = zip(*(zs.chunk(2) for zs in z))
        loss, per_scale = multi_scale_global_loss(z_1, z_2, self.scale_weights, self.temperature,
                                                  gather_distributed=True)
        return loss, {"L_g_M": loss.item(), **{f"L_g_stage{s}": v.item() for s, v in zip(self.stages, per_scale)}}


class SimCLRPretrainer(MMGLGlobalPretrainer):
    """SimCLR [14] ("Global" in the MMGL paper's tables): NT-Xent on the last encoder stage, transaxial view."""

    method_name = "SimCLR"
    multi_scale_multi_view_options = False

    def __init__(self, *args, **kwargs):
        kwargs.update(scale_weights=(1.0,), multi_view=False)
        super().__init__(*args, **kwargs)

    def variant_suffix(self) -> str:
        return ""


class MMGLLocalPretrainer(_MMGLBase):
    method_name = "MMGLLocal"
    scale_order = "decoder stages, in network order: lowest resolution first, the full resolution decoder stage last"
    needs_labels = True

    @classmethod
    def add_arguments(cls, group) -> None:
        super().add_arguments(group)
        group.add_argument("--no-global", action="store_true",
                           help="ablation: random encoder instead of stage 1's (suffix _noMG)")
        group.add_argument("--init-from", default=None,
                           help="stage-1 checkpoint (default: the mmgl_global run of the same plans/fold)")
        group.add_argument("--local-stride", type=int, default=PAPER_LOCAL_STRIDE,
                           help=f"feature sub-sampling (paper: {PAPER_LOCAL_STRIDE})")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        return dict(super().kwargs_from_args(args), use_global=not args.no_global, init_checkpoint=args.init_from,
                    stride=args.local_stride)

    def __init__(self, *args, use_global: bool = True, init_checkpoint: Optional[str] = None,
                 stride: int = PAPER_LOCAL_STRIDE, **kwargs):
        super().__init__(*args, **kwargs)
        n_decoder = len(self.configuration_manager.network_arch_init_kwargs["features_per_stage"]) - 1
        per_stage = scale_stages(self.scale_weights, n_decoder, "decoder")  # the highest resolutions
        self.stages, self.scale_weights = list(per_stage), tuple(per_stage.values())
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if init_checkpoint and not use_global:
            raise ValueError("init_checkpoint (--init-from) contradicts use_global=False (--no-global)")
        self.stride = stride
        self.use_global = use_global
        self.init_checkpoint = init_checkpoint
        self.num_heads = self.plans_manager.get_label_manager(self.dataset_json).num_segmentation_heads

    def variant_suffix(self) -> str:
        return contract.mmgl_variant(self.multi_view, self.use_global)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "stride": self.stride, "use_global": self.use_global,
                "global_checkpoint": self.global_checkpoint() if self.use_global else None}

    def global_checkpoint(self) -> str:
        """Stage 1's checkpoint: ``init_checkpoint`` or the ``MMGLGlobal`` pretraining of the same plans,
        configuration, fold and views."""
        return self.init_checkpoint or contract.checkpoint_path(
            self.dataset_name, MMGLGlobalPretrainer.method_name, self.plans_manager.plans_name,
            self.configuration_name, self.fold, contract.mmgl_variant(self.multi_view))

    def build_dataset(self):
        return self.with_views(labeled_training_dataset(self.preprocessed_base, self.configuration_manager,
                                                        self.fold))

    def build_model(self) -> nn.Module:
        network = self.build_planned_network(self.num_heads)
        if self.use_global:
            path = self.global_checkpoint()
            command = contract.pretrain_command(self.dataset_name, self.configuration_name,
                                                self.plans_manager.plans_name, self.fold,
                                                "mmgl_global" + ("" if self.multi_view else " --no-multi-view"))
            load_pretraining(network, path, "MMGL stage-1 checkpoint", f"run {command} first, or pass --init-from "
                             f"<checkpoint>, or --no-global (ablation: random encoder)",
                             skip=("decoder.",),  # stage 1 trained the encoder only
                             # SimCLR = stage 1 on one scale and view: SemiContrast's stage 1 (MMGL Table 1)
                             accepted_methods=(MMGLGlobalPretrainer.method_name, SimCLRPretrainer.method_name),
                             user="mmgl_local")
            if self.rank == 0:
                print(f"Encoder initialised from stage 1: {path}")
        return MultiScaleLocalModel(network, self.stages, self.projection_dim)

    def has_unused_parameters(self) -> bool:
        return True  # the segmentation heads get no gradient in pretraining

    def network_weights(self) -> dict:
        return {k[len("network."):]: v for k, v in super().network_weights().items() if k.startswith("network.")}

    def compute_loss(self, data: torch.Tensor, target: Optional[torch.Tensor] = None):
        view_1, seg_1 = augment_2d(data, target)
        view_2, seg_2 = augment_2d(data, target)
        features = self.model(torch.cat([view_1, view_2]))  # A = both augmentations of every image
        seg = torch.cat([seg_1, seg_2])
        pairs = [subsample_with_labels(f, seg, self.stride) for f in features]
        loss, per_scale = multi_scale_local_loss([f for f, _ in pairs], [y for _, y in pairs], self.scale_weights,
                                                 self.temperature)
        return loss, {"L_l_M": loss.item(), **{f"L_l_stage{s}": v.item() for s, v in zip(self.stages, per_scale)}}
