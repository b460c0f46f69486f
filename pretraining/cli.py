"""``nnunet_semi_pretrain``: self-supervised pretraining on a preprocessed nnU-Net dataset, methods by name.

Example (CCM, 2D, fold 0, then fine-tuning with CPS from the two pretrained networks)::

    nnunet_semi_pretrain -d 27 -c 2d -m ccm
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerCCMCPS

IDEAL (dense local contrastive pretraining of the encoder, then the two-decoder cross-consistency trainer)::

    nnunet_semi_pretrain -d 27 -c 2d -m ideal
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerIDEAL

Global + local contrastive pretraining (Chaitanya et al. 2020), then pseudo-label local contrastive joint training
from it (Chaitanya et al. 2023, Table III "PI.")::

    nnunet_semi_pretrain -d 27 -c 2d -m globallocal
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerPLContrastPI

Models Genesis (restoration of transformed patches; fine-tune with nnU-Net's own -pretrained_weights)::

    nnunet_semi_pretrain -d 27 -c 3d_fullres -m genesis
    nnUNetv2_train 27 3d_fullres 0 -pretrained_weights \\
        $nnUNet_results/<dataset>/GenesisPretrain__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth

Several GPUs: ``torchrun --nproc_per_node 2 -m pretraining.cli -d 27 -c 2d -m ccm`` (contrastive negatives are
gathered across ranks; ``--batch-size`` is global).
"""
import argparse
import multiprocessing
import os

import torch

from pretraining.ccm import CCMPretrainer
from pretraining.genesis import GenesisPretrainer
from pretraining.global_local import GlobalLocalPretrainer
from pretraining.ideal import IDEALPretrainer

PRETRAINERS = {"ccm": CCMPretrainer, "genesis": GenesisPretrainer, "globallocal": GlobalLocalPretrainer,
               "ideal": IDEALPretrainer}


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
                        help="global batch (default: ccm 40 in 2D, plans in 3D; ideal, genesis: the plans')")
    parser.add_argument("--iters-per-epoch", type=int, default=None,
                        help="iterations per epoch (default: one pass over the images)")
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate, cosine annealed (default: the method's paper value: ccm 1e-3, "
                             "ideal 1e-5, globallocal 1e-3; genesis 1e-3, the runner's default)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--c", action="store_true", help="continue an interrupted pretraining")
    contrastive = parser.add_argument_group("ccm, ideal and globallocal")
    contrastive.add_argument("--proj-dim", type=int, default=None,
                             help="projector output size (default: ccm 1000 (paper), ideal 128, globallocal 128)")
    contrastive.add_argument("--temperature", type=float, default=None,
                             help="contrastive temperature (default: ccm 0.07 (paper), ideal 0.1, globallocal 0.1)")
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
    globallocal = parser.add_argument_group("globallocal")
    globallocal.add_argument("--global-fraction", type=float, default=0.5,
                             help="fraction of the epochs for the global stage (encoder); the rest pretrains the "
                                  "decoder with the local loss, encoder frozen (default: 0.5)")
    globallocal.add_argument("--region-size", type=int, default=3, help="local region size K per axis (default: 3)")
    globallocal.add_argument("--local-stage", type=int, default=None,
                             help="decoder stage of the local loss, 0 = deepest (default: the stage at 1/4 "
                                  "resolution)")
    genesis = parser.add_argument_group("genesis (paper probabilities by default)")
    genesis.add_argument("--nonlinear-p", type=float, default=0.9, help="non-linear transformation probability")
    genesis.add_argument("--local-shuffle-p", type=float, default=0.5, help="local pixel shuffling probability")
    genesis.add_argument("--paint-p", type=float, default=0.9, help="in-/out-painting probability")
    genesis.add_argument("--outpaint-p", type=float, default=0.8,
                         help="share of out-painting among painted patches (the rest: in-painting)")
    genesis.add_argument("--flip-p", type=float, default=0.4, help="flip augmentation probability per step")
    genesis.add_argument("--shuffle-blocks", type=int, default=10000, help="local shuffling windows per patch")
    genesis.add_argument("--no-nonlinear", action="store_true", help="ablation: without the non-linear mapping")
    genesis.add_argument("--no-local-shuffle", action="store_true", help="ablation: without local shuffling")
    genesis.add_argument("--no-inpaint", action="store_true", help="ablation: out-painting only")
    genesis.add_argument("--no-outpaint", action="store_true", help="ablation: in-painting only")
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
    elif args.m == "globallocal":
        method_kwargs.update(global_fraction=args.global_fraction, region_size=args.region_size,
                             local_stage=args.local_stage)
    elif args.m == "genesis":
        outpaint = 1.0 if args.no_inpaint else 0.0 if args.no_outpaint else args.outpaint_p
        method_kwargs.update(nonlinear_probability=0.0 if args.no_nonlinear else args.nonlinear_p,
                             local_shuffle_probability=0.0 if args.no_local_shuffle else args.local_shuffle_p,
                             paint_probability=0.0 if args.no_inpaint and args.no_outpaint else args.paint_p,
                             outpaint_probability=outpaint, flip_probability=args.flip_p,
                             num_blocks=args.shuffle_blocks)
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
