"""CPS whose two networks start from two single-network self-supervised pretrainings: the CCM paper's Table 1 rows
"CPS + SimCLR" (``nnUNetTrainerSimCLRCPS``: the encoders, the decoders keep their fresh initialisation) and
"CPS + Models Genesis" (``nnUNetTrainerGenesisCPS``: encoder and decoder), the baselines of CCM's joint pretraining
of the pair (``nnUNetTrainerCCMCPS``).

Network a starts from one pretraining, network b from another (two seeds of the same method): the pair checkpoint
of :mod:`nnunet_semi.pretrained.pairing` (``nnunet_semi_pair_pretrained``), found by convention at
``<Method>Pretrain_pair__<plans>__<configuration>/fold_<fold>/checkpoint_final.pth`` or named by
``nnUNet_semi_pretrained`` / ``-pretrained_weights``. Everything else is :class:`nnUNetTrainerCPS` (its Dice cross
term with alpha 1 by default; ``_paper``: the CCM paper's CE with alpha 0.1, the setting of its Table 1).
"""
from nnunet_semi.pretrained import contract
from nnunet_semi.training.budgets import add_family_variants
from nnunet_semi.training.cps import nnUNetTrainerCPS, nnUNetTrainerCPS_paper
from nnunet_semi.training.pretrained_init import PRETRAINED_ENV, PretrainedInitialisation


class PairedPretrainedInitialisation(PretrainedInitialisation):
    """:class:`PretrainedInitialisation` from a pair of pretrainings of ``pretraining_method``."""

    pretraining_variant = contract.PAIR

    def _missing_fixes(self) -> str:
        run = contract.pretrain_command(self.plans_manager.dataset_name, self.configuration_name,
                                        self.plans_manager.plans_name, self.fold, self.pretraining_command)
        first, second = (contract.checkpoint_path(self.plans_manager.dataset_name, self.pretraining_method,
                                                  self.plans_manager.plans_name, self.configuration_name, self.fold,
                                                  contract.tag_suffix(f"seed{s}")) for s in (0, 1))
        return (f"pretrain twice with different seeds ({run} --seed 0 --tag seed0, then --seed 1 --tag seed1), pair "
                f"the two (nnunet_semi_pair_pretrained {first} {second}), or set {PRETRAINED_ENV}=<pair checkpoint>")


class nnUNetTrainerSimCLRCPS(PairedPretrainedInitialisation, nnUNetTrainerCPS):
    """CPS from two SimCLR-pretrained encoders (``nnunet_semi_pretrain -m simclr``, two seeds, paired)."""

    pretraining_method = "SimCLR"
    pretraining_command = "simclr"
    pretrained_skip = (".decoder.",)  # SimCLR pretrains the encoder only


class nnUNetTrainerSimCLRCPS_paper(nnUNetTrainerSimCLRCPS, nnUNetTrainerCPS_paper):
    """"CPS + SimCLR" with the CCM paper's CPS setting (CE, alpha 0.1)."""


class nnUNetTrainerGenesisCPS(PairedPretrainedInitialisation, nnUNetTrainerCPS):
    """CPS from two Models Genesis networks (``nnunet_semi_pretrain -m genesis``, two seeds, paired)."""

    pretraining_method = "Genesis"
    pretraining_command = "genesis"


class nnUNetTrainerGenesisCPS_paper(nnUNetTrainerGenesisCPS, nnUNetTrainerCPS_paper):
    """"CPS + Models Genesis" with the CCM paper's CPS setting (CE, alpha 0.1)."""


PAIRED_CPS_VARIANTS = add_family_variants(nnUNetTrainerSimCLRCPS, nnUNetTrainerSimCLRCPS_paper,
                                          nnUNetTrainerGenesisCPS, nnUNetTrainerGenesisCPS_paper)
