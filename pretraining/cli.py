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

MMGL (stage 1: multi-scale multi-view global contrastive, stage 2: multi-scale local supervised contrastive, stage 3:
deeply supervised fine-tuning); SimCLR ("Global" baseline) is ``-m simclr``::

    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_global
    nnunet_semi_pretrain -d 27 -c 2d -m mmgl_local
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerMMGL

The CCM paper's baselines "CPS + SimCLR" / "CPS + Models Genesis": two runs of one single-network method (the
second beside the first: ``--tag``), paired for CPS's two networks (``nnunet_semi_pair_pretrained``)::

    nnunet_semi_pretrain -d 27 -c 2d -m simclr --seed 0 --tag seed0
    nnunet_semi_pretrain -d 27 -c 2d -m simclr --seed 1 --tag seed1
    nnunet_semi_pair_pretrained <SimCLRPretrain_seed0 checkpoint> <SimCLRPretrain_seed1 checkpoint>
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerSimCLRCPS

Models Genesis (restoration of transformed patches; fine-tune with nnU-Net's own -pretrained_weights)::

    nnunet_semi_pretrain -d 27 -c 3d_fullres -m genesis
    nnUNetv2_train 27 3d_fullres 0 -pretrained_weights \\
        $nnUNet_results/<dataset>/GenesisPretrain__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth

Each method has options of its own: ``nnunet_semi_pretrain -m <method> --help`` lists them.
Several GPUs: ``torchrun --nproc_per_node 2 -m pretraining.cli -d 27 -c 2d -m ccm`` (contrastive negatives are
gathered across ranks; ``--batch-size`` is global).
"""
import argparse
import multiprocessing
import os
from typing import List, Optional

import torch

from nnunet_semi.utils.environment import SEED_ENV, THREADS_ENV
from pretraining.ccm import CCMPretrainer
from pretraining.genesis import GenesisPretrainer
from pretraining.global_local import GlobalLocalPretrainer
from pretraining.ideal import IDEALPretrainer
from pretraining.mmgl import MMGLGlobalPretrainer, MMGLLocalPretrainer, SimCLRPretrainer

PRETRAINERS = {"ccm": CCMPretrainer, "genesis": GenesisPretrainer, "globallocal": GlobalLocalPretrainer,
               "ideal": IDEALPretrainer, "mmgl_global": MMGLGlobalPretrainer, "mmgl_local": MMGLLocalPretrainer,
               "simclr": SimCLRPretrainer}


def create_pretrainer(method: str, dataset_name_or_id, configuration: str, **kwargs):
    """The pretrainer registered as ``method`` (timm-style: one entry point, methods found by name)."""
    if method not in PRETRAINERS:
        raise ValueError(f"unknown pretraining method '{method}'; available: {sorted(PRETRAINERS)}")
    return PRETRAINERS[method](dataset_name_or_id, configuration, **kwargs)


def build_parser(method: Optional[str] = None) -> argparse.ArgumentParser:
    """The common options, plus ``method``'s own (each method class declares them: ``add_arguments``)."""
    parser = argparse.ArgumentParser(prog="nnunet_semi_pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: nnunet_semi_pretrain -d 27 -c 2d -m ccm -f 0")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-m", default="ccm", choices=sorted(PRETRAINERS), help="method (default: ccm)")
    parser.add_argument("-f", default="0", help="fold whose training cases (plus imagesUnlabeled) are used; 'all'")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--epochs", type=int, default=400, help="epochs (default: 400, CCM's paper value)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch (default: ccm 40 in 2D; the other methods and 3D: the plans')")
    parser.add_argument("--iters-per-epoch", type=int, default=None,
                        help="iterations per epoch (default: one pass over the images)")
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate, cosine annealed (default: the method's: ideal 1e-5 (paper), the "
                             "others 1e-3)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--tag", default=None,
                        help="suffix of the output folder (<Method>Pretrain<variant>_<tag>__...): a second run of the "
                             "same method (e.g. --seed 1 --tag seed1) beside the first, e.g. to pair two with "
                             "nnunet_semi_pair_pretrained")
    # its own dest: argparse would otherwise store --c into -c's "c" and replace the configuration with True
    parser.add_argument("--c", dest="continue_training", action="store_true",
                        help="continue an interrupted pretraining from its checkpoint_latest.pth")
    if method in PRETRAINERS:
        PRETRAINERS[method].add_arguments(parser.add_argument_group(f"{method} options"))
    return parser


def pretrain_entry(argv: Optional[List[str]] = None):
    selector = argparse.ArgumentParser(add_help=False)
    selector.add_argument("-m", default="ccm")
    method = selector.parse_known_args(argv)[0].m
    args = build_parser(method).parse_args(argv)

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: one process per GPU
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get(THREADS_ENV, multiprocessing.cpu_count())))
    # options left unset keep the method's own (paper) defaults
    method_kwargs = PRETRAINERS[args.m].kwargs_from_args(args)
    if args.lr is not None:
        method_kwargs["learning_rate"] = args.lr
    pretrainer = create_pretrainer(args.m, args.d, args.c, fold=args.f, plans_identifier=args.p, device=device,
                                   num_epochs=args.epochs, batch_size=args.batch_size,
                                   iterations_per_epoch=args.iters_per_epoch,
                                   seed=args.seed if args.seed is not None else _env_seed(), tag=args.tag,
                                   **method_kwargs)
    print(pretrainer.run(continue_training=args.continue_training))


def _env_seed():
    seed = os.environ.get(SEED_ENV)
    return int(seed) if seed is not None else None


if __name__ == "__main__":
    pretrain_entry()
