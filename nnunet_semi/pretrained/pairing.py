"""Pair two single-network pretrainings into one checkpoint for the two networks of CPS.

The CCM paper's Table 1 compares CCM's jointly pretrained pair with "CPS + SimCLR" and "CPS + Models Genesis": CPS
whose two networks start from a single-network self-supervised pretraining. CPS needs two *different* networks (its
cross supervision is the disagreement between them), so the pair is two pretrainings of the same method, e.g. two
seeds::

    nnunet_semi_pretrain -d 27 -c 2d -m simclr --seed 0 --tag seed0
    nnunet_semi_pretrain -d 27 -c 2d -m simclr --seed 1 --tag seed1
    nnunet_semi_pair_pretrained $R/SimCLRPretrain_seed0__nnUNetPlans__2d/fold_0/checkpoint_final.pth \\
                                $R/SimCLRPretrain_seed1__nnUNetPlans__2d/fold_0/checkpoint_final.pth
    nnUNetv2_train 27 2d 0 -tr nnUNetTrainerSimCLRCPS        # or -m genesis ... -tr nnUNetTrainerGenesisCPS

(``$R`` = ``$nnUNet_results/<Dataset>``.) The pair is written where the fine-tuning trainers look by convention,
``<Method>Pretrain_pair__<plans>__<configuration>/fold_<fold>/checkpoint_final.pth`` (or to ``-o``): its
``network_weights`` are the first checkpoint's under ``net_a.*`` and the second's under ``net_b.*`` (the keys of
:class:`~nnunet_semi.networks.dual.DualNetwork`), its provenance records the method, so the trainers' method check
applies, and both members' own records.
"""
import argparse
import os
from typing import List, Optional

import torch

from nnunet_semi.pretrained import contract
from nnunet_semi.pretrained.contract import PretrainedWeightsError
from nnunet_semi.pretrained.loading import read_checkpoint
from nnunet_semi.utils.checkpoint_io import atomic_save

MEMBERS = ("net_a", "net_b")
#: provenance entries that must agree between the two members (they describe the network and the data)
SAME = ("method", "dataset", "plans", "configuration", "fold")


def _member(path: str) -> dict:
    checkpoint = read_checkpoint(path, True, "nnunet_semi_pair_pretrained")
    weights = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
    record = checkpoint.get(contract.PROVENANCE_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not isinstance(record, dict) or "method" not in record:
        raise PretrainedWeightsError(f"{path} is not a checkpoint of nnunet_semi_pretrain (it needs 'network_weights' "
                                     f"and a 'pretraining' record). Fix: pair two checkpoint_final.pth files written "
                                     f"by nnunet_semi_pretrain.")
    if any(k.split(".", 1)[0] in MEMBERS for k in weights):
        raise PretrainedWeightsError(f"{path} holds two networks already (net_a.* / net_b.*; e.g. CCM or a pair). "
                                     f"Fix: pair two single-network pretrainings (e.g. -m simclr or -m genesis).")
    return {"weights": weights, "record": record}


def pair_checkpoints(checkpoint_a: str, checkpoint_b: str, output: Optional[str] = None) -> str:
    """Write the pair of ``checkpoint_a`` (network a) and ``checkpoint_b`` (network b) to ``output`` (default: the
    convention path of the pair for the members' method, dataset, plans, configuration and fold) and return the
    path. Refused with :class:`PretrainedWeightsError` when the members come from different methods, data or
    plans, have different keys or shapes, or are the same weights (CPS would start from two identical networks)."""
    a, b = _member(checkpoint_a), _member(checkpoint_b)
    for key in SAME:
        if a["record"].get(key) != b["record"].get(key):
            raise PretrainedWeightsError(
                f"{checkpoint_a} and {checkpoint_b} differ in their pretraining {key} ({a['record'].get(key)} / "
                f"{b['record'].get(key)}). Fix: pair two runs of the same nnunet_semi_pretrain command that differ "
                f"only in --seed (and --tag).")
    shapes_a = {k: tuple(v.shape) for k, v in a["weights"].items()}
    shapes_b = {k: tuple(v.shape) for k, v in b["weights"].items()}
    if shapes_a != shapes_b:
        key = sorted(set(shapes_a.items()) ^ set(shapes_b.items()))[0][0]
        raise PretrainedWeightsError(f"{checkpoint_a} and {checkpoint_b} hold different networks (key '{key}': "
                                     f"{shapes_a.get(key)} / {shapes_b.get(key)}). Fix: pretrain both with the same "
                                     f"plans (-p) and configuration (-c).")
    if all(torch.equal(a["weights"][k], b["weights"][k]) for k in shapes_a):
        raise PretrainedWeightsError(f"{checkpoint_a} and {checkpoint_b} hold the same weights: CPS would start from "
                                     f"two identical networks. Fix: pretrain twice with different --seed (and --tag "
                                     f"so that the second run does not overwrite the first).")
    record = a["record"]
    if output is None:
        output = contract.checkpoint_path(record["dataset"], record["method"], record["plans"],
                                          record["configuration"], record["fold"], contract.PAIR)
    weights = {f"{member}.{k}": v for member, m in zip(MEMBERS, (a, b)) for k, v in m["weights"].items()}
    pair_record = contract.provenance(record["method"], record["dataset"], record["plans"], record["configuration"],
                                      record["fold"], paired_from=[os.path.abspath(checkpoint_a),
                                                                   os.path.abspath(checkpoint_b)],
                                      members=[a["record"], b["record"]])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_save({"network_weights": weights, contract.PROVENANCE_KEY: pair_record}, output)
    return output


def pair_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="nnunet_semi_pair_pretrained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: nnunet_semi_pair_pretrained "
                                            "$R/SimCLRPretrain_seed0__nnUNetPlans__2d/fold_0/checkpoint_final.pth "
                                            "$R/SimCLRPretrain_seed1__nnUNetPlans__2d/fold_0/checkpoint_final.pth")
    parser.add_argument("checkpoint_a", help="pretraining checkpoint for network a (net_a)")
    parser.add_argument("checkpoint_b", help="pretraining checkpoint for network b (net_b), e.g. another seed")
    parser.add_argument("-o", default=None, help="output file (default: <Method>Pretrain_pair__<plans>__"
                                                 "<configuration>/fold_<fold>/checkpoint_final.pth in the members' "
                                                 "dataset folder of $nnUNet_results, where the trainers look)")
    args = parser.parse_args(argv)
    try:
        print(pair_checkpoints(args.checkpoint_a, args.checkpoint_b, args.o))
    except PretrainedWeightsError as error:
        raise SystemExit(f"nnunet_semi_pair_pretrained: {error}")
