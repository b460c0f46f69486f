"""Models Genesis: self-supervised restoration pretraining (Zhou et al., "Models Genesis", MedIA 2021, Sec. 2.1).

The planned nnU-Net network (one output channel per input channel) restores the original patch from a transformed
version (non-linear intensity transformation, local pixel shuffling, in-/out-painting; the functions and their
numbers are documented in :mod:`pretraining.genesis_transforms`) by minimising the MSE restoration loss
(:func:`nnunet_semi.losses.reconstruction.restoration_loss`). The whole encoder-decoder is pretrained; fine-tuning
starts from every tensor but the segmentation heads::

    nnunet_semi_pretrain -d 27 -c 3d_fullres -m genesis
    nnUNetv2_train 27 3d_fullres 0 -pretrained_weights \\
        $nnUNet_results/Dataset027_X/GenesisPretrain__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth

(nnU-Net's own loader copies every key except ``.seg_layers.``; ``network_weights`` are the plain planned
network's state_dict, so the keys match ``nnUNetTrainer``'s network.)

Paper defaults: transformation probabilities 0.9 (non-linear), 0.5 (local shuffling, 10000 windows of at most 1/10
of the patch per axis), 0.9 (painting: out-painting 0.8, in-painting 0.2), flips p = 0.4; ablations as switches
(``--no-nonlinear``, ``--no-local-shuffle``, ``--no-inpaint``, ``--no-outpaint``; output folder suffixes
``_noNL`` etc.). Where our setting differs from the paper's:

* intensities: the paper's patches are in [0, 1] (CT clipped to [-1000, 1000] HU); nnU-Net's are normalised
  (z-score / CT percentile window). Each patch channel is min-max scaled to [0, 1], transformed, and scaled back
  (:func:`pretraining.genesis_transforms.genesis_pair`); the target is the untransformed patch in nnU-Net's
  normalisation and the network output is linear (the paper: sigmoid on [0, 1]);
* network: nnU-Net's planned U-Net (2D or 3D) instead of the paper's 3D U-Net; patches of the plans' patch size
  sampled by nnU-Net's loader from the fold's training images and imagesUnlabeled (the paper: 64 x 64 x 32 cubes
  from LUNA16);
* optimiser: the runner's Adam with cosine annealing, lr 1e-3 (the authors' code: SGD lr 1 with plateau decay
  and early stopping after 10000 epochs at most); default 400 epochs, one pass over the images per epoch;
* batch: the plans' batch size (the paper: 6 cubes for the PyTorch release, 8 in Keras).
"""
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from nnunet_semi.losses.reconstruction import restoration_loss
from pretraining.genesis_transforms import genesis_pair
from pretraining.runner import Pretrainer


class GenesisPretrainer(Pretrainer):
    method_name = "Genesis"

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--nonlinear-p", type=float, default=0.9, help="non-linear transformation probability")
        group.add_argument("--local-shuffle-p", type=float, default=0.5, help="local pixel shuffling probability")
        group.add_argument("--paint-p", type=float, default=0.9, help="in-/out-painting probability")
        group.add_argument("--outpaint-p", type=float, default=0.8,
                           help="share of out-painting among painted patches (the rest: in-painting)")
        group.add_argument("--flip-p", type=float, default=0.4, help="flip augmentation probability per step")
        group.add_argument("--shuffle-blocks", type=int, default=10000, help="local shuffling windows per patch")
        group.add_argument("--no-nonlinear", action="store_true", help="ablation: without the non-linear mapping")
        group.add_argument("--no-local-shuffle", action="store_true", help="ablation: without local shuffling")
        group.add_argument("--no-inpaint", action="store_true", help="ablation: out-painting only")
        group.add_argument("--no-outpaint", action="store_true", help="ablation: in-painting only")

    @classmethod
    def kwargs_from_args(cls, args) -> dict:
        outpaint = 1.0 if args.no_inpaint else 0.0 if args.no_outpaint else args.outpaint_p
        return dict(nonlinear_probability=0.0 if args.no_nonlinear else args.nonlinear_p,
                    local_shuffle_probability=0.0 if args.no_local_shuffle else args.local_shuffle_p,
                    paint_probability=0.0 if args.no_inpaint and args.no_outpaint else args.paint_p,
                    outpaint_probability=outpaint, flip_probability=args.flip_p, num_blocks=args.shuffle_blocks)

    def __init__(self, *args, nonlinear_probability: float = 0.9, local_shuffle_probability: float = 0.5,
                 paint_probability: float = 0.9, outpaint_probability: float = 0.8, flip_probability: float = 0.4,
                 num_blocks: int = 10000, **kwargs):
        super().__init__(*args, **kwargs)
        for name, p in (("nonlinear_probability", nonlinear_probability), ("paint_probability", paint_probability),
                        ("local_shuffle_probability", local_shuffle_probability),
                        ("outpaint_probability", outpaint_probability), ("flip_probability", flip_probability)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.nonlinear_probability = nonlinear_probability
        self.local_shuffle_probability = local_shuffle_probability
        self.paint_probability = paint_probability
        self.outpaint_probability = outpaint_probability
        self.flip_probability = flip_probability
        self.num_blocks = num_blocks

    def hyperparameters(self) -> dict:
        return {"nonlinear_probability": self.nonlinear_probability,
                "local_shuffle_probability": self.local_shuffle_probability,
                "paint_probability": self.paint_probability, "outpaint_probability": self.outpaint_probability,
                "flip_probability": self.flip_probability, "num_blocks": self.num_blocks}

    def variant_suffix(self) -> str:
        """Ablations (paper Sec. 4 / Table 2: one transformation left out) get their own output folder."""
        suffix = "" if self.nonlinear_probability else "_noNL"
        suffix += "" if self.local_shuffle_probability else "_noLS"
        if self.paint_probability == 0:
            suffix += "_noPaint"
        elif self.outpaint_probability == 1:
            suffix += "_noIn"
        elif self.outpaint_probability == 0:
            suffix += "_noOut"
        return suffix

    def build_model(self) -> nn.Module:
        return self.build_planned_network(self.num_input_channels)

    def sample_transform(self) -> "GenesisTransform":
        """The transformations run in nnU-Net's augmentation workers (NumPy, 20x the network's cost on a CPU
        when they ran in the training process); the loader's batch then carries the transformed patches as
        ``'data'`` and the restoration targets as ``'target'``."""
        return GenesisTransform(self.nonlinear_probability, self.local_shuffle_probability, self.paint_probability,
                                self.outpaint_probability, self.flip_probability, self.num_blocks)

    def compute_batch_loss(self, batch: dict) -> Tuple[torch.Tensor, Dict[str, float]]:
        inputs = batch["data"].to(self.device, non_blocking=True)
        targets = batch["target"].to(self.device, non_blocking=True)
        return self.compute_loss(inputs, targets)

    def compute_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The restoration loss of transformed patches against their originals (both ``(B, C, *spatial)``)."""
        loss = restoration_loss(self.model(inputs), targets)
        return loss, {"L_rec": loss.item()}


class GenesisTransform:
    """:func:`pretraining.genesis_transforms.genesis_pair` as a per-sample transform of nnU-Net's data loader:
    ``image`` becomes the transformed patch, ``segmentation`` (unused by Genesis) the restoration target. A
    module-level class, so that the loader and its transform pickle into the augmentation worker processes; the
    random source is the worker's ``np.random`` (the loader's own patch sampling uses it too)."""

    def __init__(self, nonlinear_probability: float, local_shuffle_probability: float, paint_probability: float,
                 outpaint_probability: float, flip_probability: float, num_blocks: int):
        self.probabilities = (nonlinear_probability, local_shuffle_probability, paint_probability,
                              outpaint_probability, flip_probability)
        self.num_blocks = num_blocks

    def __call__(self, image: torch.Tensor, segmentation: torch.Tensor = None, **kwargs) -> dict:
        x, target = genesis_pair(image.numpy(), np.random, *self.probabilities, num_blocks=self.num_blocks)
        return {"image": torch.from_numpy(x), "segmentation": torch.from_numpy(target)}
