"""``nnunet_semi_pretrain``: self-supervised pretraining on a preprocessed nnU-Net dataset, methods by name.

Example (CCM, 2D, fold 0, then fine-tuning with CPS from the two pretrained networks)::

    nnunet_semi_pretrain -d 27 -c 2d -m ccm
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerCCMCPS

IDEAL (dense local contrastive pretraining of the encoder, then the two-decoder cross-consistency trainer)::

    nnunet_semi_pretrain -d 27 -c 2d -m ideal
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerIDEAL

MMGL (stage 1: multi-scale multi-view global contrastive, stage 2: multi-scale local supervised contrastive, stage 3:
deeply supervised fine-tuning); SimCLR ("Global" baseline) is ``-m simclr``::

    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_global
    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_local
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerMMGL

Several GPUs: ``torchrun --nproc_per_node 2 -m pretraining.cli -d 27 -c 2d -m ccm`` (contrastive negatives are
gathered across ranks; ``--batch-size`` is global).
"""
import argparse
import multiprocessing
import os

import torch

from pretraining.ccm import CCMPretrainer
from pretraining.ideal import IDEALPretrainer
from pretraining.mmgl import MMGLGlobalPretrainer, MMGLLocalPretrainer, SimCLRPretrainer

PRETRAINERS = {"ccm": CCMPretrainer, "ideal": IDEALPretrainer, "mmgl_global": MMGLGlobalPretrainer,
               "mmgl_local": MMGLLocalPretrainer, "simclr": SimCLRPretrainer}


def create_pretrainer(method: str, dataset_name_or_id, configuration: str, **kwargs):
    """The pretrainer registered as ``method`` (timm-style: one entry point, methods found by name)."""
    if method not in PRETRAINERS:
        raise ValueError(f"unknown pretraining method '{method}'; available: {sorted(PRETRAINERS)}")
    return PRETRAINERS[method](dataset_name_or_id, configuration, **kwargs)


def pretrain_entry():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-m", default="ccm", choices=sorted(PRETRAINERS), help="method (default: ccm)")
    parser.add_argument("-f", default="0", help="fold whose training cases (plus imagesUnlabeled) are used; 'all'")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--epochs", type=int, default=400, help="epochs (default: 400, CCM's paper value)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch (default: ccm 40 in 2D, plans in 3D; ideal: the plans')")
    parser.add_argument("--iters-per-epoch", type=int, default=None,
                        help="iterations per epoch (default: one pass over the images)")
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate, cosine annealed (default: the method's paper value: ccm 1e-3, "
                             "ideal 1e-5; mmgl_*/simclr: 1e-3, not given in the paper)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--c", action="store_true", help="continue an interrupted pretraining")
    contrastive = parser.add_argument_group("ccm, ideal, mmgl_*, simclr")
    contrastive.add_argument("--proj-dim", type=int, default=None,
                             help="projector output size (default: ccm 1000 (paper), ideal 128, mmgl_*/simclr 128)")
    contrastive.add_argument("--temperature", type=float, default=None,
                             help="contrastive temperature (default: ccm 0.07 (paper), ideal 0.1, mmgl_*/simclr 0.07)")
    ccm = parser.add_argument_group("ccm")
    ccm.add_argument("--block-size", type=int, nargs="+", default=None, help="mask block size per axis")
    ccm.add_argument("--lambda-con", type=float, default=1.0, help="weight of L_con in eq. 3 (paper: 1)")
    ccm.add_argument("--no-con", action="store_true", help="ablation: without L_con")
    ccm.add_argument("--no-rec", action="store_true", help="ablation: without L_rec")
    ideal = parser.add_argument_group("ideal")
    ideal.add_argument("--crop-fraction", type=float, default=0.75,
                       help="view crop size per axis as a fraction of the patch, rounded to the encoder stride")
    ideal.add_argument("--global-weight", type=float, default=0.0,
                       help="weight of the global loss (eq. 1) added to the local loss (eq. 2); paper: 0")
    ideal.add_argument("--no-intensity-jitter", action="store_true", help="views differ in geometry only")
    mmgl = parser.add_argument_group("mmgl_global and mmgl_local")
    mmgl.add_argument("--scale-weights", type=float, nargs="+", default=None,
                      help="lambda per scale on the last encoder (global) / decoder (local) stages, lowest resolution "
                           "first (paper: 0.2 0.2 0.6)")
    mmgl.add_argument("--no-multi-view", action="store_true",
                      help="ablation: transaxial slices only (output folder suffix _noMV)")
    mmgl.add_argument("--no-global", action="store_true",
                      help="mmgl_local ablation: random encoder instead of stage 1's (suffix _noMG)")
    mmgl.add_argument("--init-from", default=None,
                      help="mmgl_local: stage-1 checkpoint (default: the mmgl_global run of the same plans/fold)")
    mmgl.add_argument("--head-batch-norm", action="store_true",
                      help="mmgl_global / simclr: BatchNorm1d in the projection heads (SimCLR's implementation; "
                           "recommended with nnU-Net's InstanceNorm encoders; paper: off)")
    mmgl.add_argument("--local-stride", type=int, default=4, help="mmgl_local feature sub-sampling (paper: 4)")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: one process per GPU
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    # options left unset keep the method's own (paper) defaults
    method_kwargs = {k: v for k, v in (("learning_rate", args.lr), ("projection_dim", args.proj_dim),
                                       ("temperature", args.temperature)) if v is not None}
    if args.m == "ccm":
        method_kwargs.update(block_size=args.block_size, lambda_con=args.lambda_con, use_con=not args.no_con,
                             use_rec=not args.no_rec)
    elif args.m == "ideal":
        method_kwargs.update(crop_fraction=args.crop_fraction, global_weight=args.global_weight,
                             intensity_jitter=not args.no_intensity_jitter)
    elif args.m == "simclr":
        method_kwargs.update(head_batch_norm=args.head_batch_norm)
    if args.m in ("mmgl_global", "mmgl_local"):
        method_kwargs.update(multi_view=not args.no_multi_view, head_batch_norm=args.head_batch_norm)
        if args.scale_weights:
            method_kwargs.update(scale_weights=args.scale_weights)
        if args.m == "mmgl_local":
            method_kwargs.update(use_global=not args.no_global, init_checkpoint=args.init_from,
                                 stride=args.local_stride)
    pretrainer = create_pretrainer(args.m, args.d, args.c, fold=args.f, plans_identifier=args.p, device=device,
                                   num_epochs=args.epochs, batch_size=args.batch_size,
                                   iterations_per_epoch=args.iters_per_epoch,
                                   seed=args.seed if args.seed is not None else _env_seed(), **method_kwargs)
    print(pretrainer.run(continue_training=args.c))


def _env_seed():
    seed = os.environ.get("nnUNet_semi_seed")
    return int(seed) if seed is not None else None


if __name__ == "__main__":
    pretrain_entry()
