"""Benchmark profiles (dataset, configuration, plans, budget, methods) and the methods they compare.

A *method* is a trainer (the budget suffix is added per profile) plus, optionally, the pretraining commands it needs
first and extra ``nnUNetv2_train`` arguments. A *profile* fixes everything else, so that every method of a profile
is trained with the same plans, labeled batch, iterations and seeds, and evaluated on the same held-out test set.

CPU profiles run on the 2-core development machines; GPU profiles are the published comparisons (ACDC with the
SSL4MIS split at 3 / 7 labeled patients, LA with 8 labeled), on nnU-Net's default plans.
"""
import functools
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import datasets


@dataclass(frozen=True)
class Method:
    key: str
    trainer: str  # base trainer class name; the profile appends its budget suffix
    paper: str
    #: pretraining commands run first: (method for ``nnunet_semi_pretrain -m``, extra arguments)
    pretrain: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    #: extra nnUNetv2_train arguments; ``{pretrained:<method>}`` is replaced by that pretraining's checkpoint
    train_args: Tuple[str, ...] = ()
    configurations: Tuple[str, ...] = ("2d", "3d_fullres")
    #: a longer run of the same trainer: one of the profile's ``longer_budgets`` ("2x", "4x", "8x"): the profile's
    #: epochs times that factor, same iterations per epoch (e.g. the 2x reference); None: the profile's budget
    budget: Optional[str] = None
    #: "draw": the profile's labeled draw; "bound": the all-labeled dataset (every training case labeled)
    dataset: str = "draw"
    #: ensemble control: ensemble the test probabilities of this method's runs of two different seeds with
    #: nnU-Net's ``nnUNetv2_ensemble`` (no training of its own)
    ensemble_of: Optional[str] = None
    #: "train": nnUNetv2_train; "self_training": nnunet_semi_self_training --rounds 1 with ``trainer`` (round 0 is
    #: the labeled-only run of the same seed, reused), then the round-1 model predicts the test set
    runner: str = "train"
    #: environment of ``nnUNetv2_predict`` only (e.g. ``nnUNet_semi_predict_member=a``: a two-network trainer's
    #: network a alone); the trainer, its checkpoint and its training are ``trainer``'s, shared with that method
    predict_env: Tuple[Tuple[str, str], ...] = ()


METHODS: Dict[str, Method] = {m.key: m for m in (
    Method("labeled_only", "nnUNetTrainerLabeledOnly", "nnU-Net on the labeled cases only (reference)"),
    Method("cps", "nnUNetTrainerCPS", "CPS (Chen et al. 2021; CCM paper eq. 4-6), cross term in soft-Dice form with "
           "alpha 1 (the default, measured best)"),
    Method("cps_paper", "nnUNetTrainerCPS_paper", "CPS with the paper's CE cross-supervision, alpha 0.1"),
    Method("ccm_cps", "nnUNetTrainerCCMCPS", "CCM pretraining (BatchNorm projection head, as the README recommends "
           "with nnU-Net's networks) + CPS (Zhou et al.)", pretrain=(("ccm", ("--head-batch-norm",)),)),
    Method("ideal", "nnUNetTrainerIDEAL", "IDEAL (Basak & Yin)", pretrain=(("ideal", ()),)),
    Method("dual_stream", "nnUNetTrainerDualStreamCL", "dual-stream 3D contrastive (paper in shared/papers)",
           configurations=("3d_fullres",)),
    Method("dual_stream_gate", "nnUNetTrainerDualStreamCL_gate", "candidate: dual_stream whose L_u, L_reg and L_c "
           "start once the two subnetworks segment every class of their labeled batches with Dice >= 0.5",
           configurations=("3d_fullres",)),
    Method("dual_stream_gate_noreg", "nnUNetTrainerDualStreamCL_gate_noReg", "candidate: dual_stream_gate without "
           "the consistency regularisation L_reg (the paper's _noReg ablation)", configurations=("3d_fullres",)),
    Method("dual_stream_gate_regmean", "nnUNetTrainerDualStreamCL_gate_regMean", "candidate: dual_stream_gate with "
           "L_reg normalised by the batch's voxel count (proportional to eq. 5's sum) instead of by |M_diff|",
           configurations=("3d_fullres",)),
    Method("mean_teacher", "nnUNetTrainerMeanTeacher", "Mean Teacher (Tarvainen & Valpola 2017)"),
    Method("mean_teacher_dice", "nnUNetTrainerMeanTeacher_dice", "Mean Teacher with soft Dice against the teacher's "
           "argmax as consistency, weight 1 (not the paper's; the lever measured for CPS and FixMatch; an ablation)"),
    Method("uamt", "nnUNetTrainerUAMT", "UA-MT (Yu et al. 2019)"),
    Method("entmin", "nnUNetTrainerEntMin", "entropy minimisation"),
    Method("urpc", "nnUNetTrainerURPC", "URPC (Luo et al. 2021)"),
    Method("mcnet", "nnUNetTrainerMCNet", "MC-Net (Wu et al. 2021)"),
    Method("dtc", "nnUNetTrainerDTC", "DTC (Luo et al. 2021)"),
    Method("bcp", "nnUNetTrainerBCP", "BCP (Bai et al. 2023)"),
    Method("pl_contrast", "nnUNetTrainerPLContrast", "pseudo-label local contrastive (Chaitanya et al. 2023)"),
    Method("pl_contrast_pi", "nnUNetTrainerPLContrastPI", "pl_contrast started from the global+local contrastive "
           "pretraining (Chaitanya et al. 2023, Table III \"PI. + Proposed method\")", pretrain=(("globallocal", ()),)),
    Method("fixmatch", "nnUNetTrainerFixMatch_dice", "FixMatch (Sohn et al. 2020; UniMatch Sec. 3.1), soft Dice over "
           "the confident voxels (UniMatch's medical loss; the default until 2026-12-05: the records of the runs made "
           "before name nnUNetTrainerFixMatch)"),
    Method("cps_present", "nnUNetTrainerCPS_present", "candidate: CPS's Dice cross term over the foreground classes "
           "present in the other network's argmax only (a class not predicted yet teaches nothing, not its absence)"),
    Method("cps_rampup", "nnUNetTrainerCPS_rampup", "candidate: CPS with alpha ramped up over the first 40 % of the "
           "epochs (a supervised warm-up before the cross pseudo-labels count)"),
    Method("cps_nobg", "nnUNetTrainerCPS_noBG", "candidate: CPS's Dice cross term over the foreground classes only "
           "(nnU-Net's do_bg=False); decided on validation cases"),
    Method("fixmatch_sqdice", "nnUNetTrainerFixMatch_sqDice", "candidate: FixMatch's soft Dice with UniMatch's "
           "code's denominator sum p^2 + sum y; decided on validation cases"),
    Method("fixmatch_present", "nnUNetTrainerFixMatch_present", "candidate: FixMatch's soft Dice over the classes "
           "present in the confident pseudo-labels only (against the class collapse measured on ACDC)"),
    Method("fixmatch_rampup", "nnUNetTrainerFixMatch_rampup", "candidate: FixMatch with the unlabeled weight ramped "
           "up over the first 40 % of the steps"),
    Method("fixmatch_tau80", "nnUNetTrainerFixMatch_tau80", "candidate: FixMatch with the confidence threshold 0.80 "
           "instead of 0.95 (on ACDC no foreground voxel reached 0.95 in the collapsed seed)"),
    Method("fixmatch_tau0", "nnUNetTrainerFixMatch_tau0", "candidate: FixMatch without a confidence threshold (every "
           "voxel's weak-view argmax counts, as CPS's cross pseudo-labels)"),
    Method("fixmatch_cropflip", "nnUNetTrainerFixMatch_cropflip", "candidate: FixMatch with a mild weak view (crop and "
           "flip only, UniMatch's) instead of nnU-Net's full augmentation of the unlabeled stream"),
    Method("fixmatch_gate", "nnUNetTrainerFixMatch_gate", "candidate: FixMatch whose unlabeled term starts once the "
           "network segments every class of its labeled batches with Dice >= 0.5 (no background-only teaching "
           "before the structures exist)"),
    Method("cps_gate", "nnUNetTrainerCPS_gate", "candidate: CPS whose cross term starts once the two networks "
           "segment every class of their labeled batches with Dice >= 0.5"),
    Method("fixmatch_ce_2x", "nnUNetTrainerFixMatch_ce", "fixmatch_ce at twice the iterations (against "
           "labeled_only_2x)", budget="2x"),
    Method("unimatch_ce_2x", "nnUNetTrainerUniMatch_ce", "unimatch_ce (UniMatch's default) at twice the iterations "
           "(against labeled_only_2x)", budget="2x"),
    Method("bcp_2x", "nnUNetTrainerBCP", "bcp at twice the iterations (against labeled_only_2x): its labeled "
           "copy-paste stage gets twice the steps before the teacher's pseudo-labels count", budget="2x"),
    Method("fixmatch_gate_2x", "nnUNetTrainerFixMatch_gate", "fixmatch_gate at twice the iterations (against "
           "labeled_only_2x)", budget="2x"),
    Method("fixmatch_sat", "nnUNetTrainerFixMatch_SAT", "candidate: FixMatch with FreeMatch's self-adaptive class-wise "
           "thresholds (Wang et al. ICLR 2023) instead of the fixed 0.95"),
    Method("fixmatch_sat_lcc", "nnUNetTrainerFixMatch_SAT_lcc", "candidate: fixmatch_sat with each class's largest "
           "connected component of the pseudo-labels (BCP's teacher masks; 3d_fullres predicted scattered components)"),
    Method("fixmatch_ce", "nnUNetTrainerFixMatch_ce", "FixMatch with the paper's CE over the confident voxels (the "
           "default since 2026-12-05)"),
    Method("fixmatch_nocutmix", "nnUNetTrainerFixMatch_noCutMix", "FixMatch without CutMix (ablation)"),
    Method("unimatch", "nnUNetTrainerUniMatch_dice", "UniMatch (Yang et al. 2023) with its medical code's soft Dice "
           "over the confident voxels (the default until 2026-12-06: the records of the runs made before name "
           "nnUNetTrainerUniMatch)"),
    Method("unimatch_ce", "nnUNetTrainerUniMatch_ce", "UniMatch's default since 2026-12-06 (chosen on ACDC's "
           "validation patients): the paper's per-voxel CE over the confident voxels, FixMatch's default loss"),
    Method("labeled_only_2x", "nnUNetTrainerLabeledOnly", "the reference at twice the iterations (convergence check)",
           budget="2x"),
    Method("labeled_only_4x", "nnUNetTrainerLabeledOnly", "the reference at four times the iterations (does it "
           "still move between 2x and 4x?)", budget="4x"),
    Method("labeled_only_8x", "nnUNetTrainerLabeledOnly", "the reference at eight times the iterations (does it "
           "still move between 4x and 8x?)", budget="8x"),
    Method("cps_2x", "nnUNetTrainerCPS", "CPS (default) at twice the iterations (does the method need longer?)",
           budget="2x"),
    Method("cps_4x", "nnUNetTrainerCPS", "CPS (default) at four times the iterations (against labeled_only_4x)",
           budget="4x"),
    Method("fixmatch_2x", "nnUNetTrainerFixMatch_dice", "fixmatch (the soft Dice) at twice the iterations",
           budget="2x"),
    Method("all_labeled", "nnUNetTrainerLabeledOnly", "the upper bound: every training case labeled, same budget",
           dataset="bound"),
    Method("all_labeled_4x", "nnUNetTrainerLabeledOnly", "the upper bound at four times the iterations (is the "
           "bound itself converged at the profile's budget?)", dataset="bound", budget="4x"),
    Method("labeled_only_ensemble", "nnUNetTrainerLabeledOnly", "ensemble control: the labeled-only networks of two "
           "seeds (s and the next seed of the profile) averaged by nnUNetv2_ensemble", ensemble_of="labeled_only"),
    Method("labeled_only_2x_ensemble", "nnUNetTrainerLabeledOnly", "ensemble control at twice the iterations (against "
           "cps_2x): labeled_only_2x of seeds s and the next seed averaged by nnUNetv2_ensemble",
           ensemble_of="labeled_only_2x", budget="2x"),
    Method("cps_single", "nnUNetTrainerCPS", "single-network control: the CPS run of the same seed (same checkpoint, "
           "no training of its own) predicting with its network a alone (nnUNet_semi_predict_member=a): the gain "
           "without the two-network ensemble", predict_env=(("nnUNet_semi_predict_member", "a"),)),
    Method("dual_stream_single", "nnUNetTrainerDualStreamCL", "single-network control of dual_stream: its checkpoint "
           "predicting with subnetwork A (the planned nnU-Net) alone (nnUNet_semi_predict_member=a; no training of "
           "its own)", configurations=("3d_fullres",), predict_env=(("nnUNet_semi_predict_member", "a"),)),
    Method("dual_stream_b", "nnUNetTrainerDualStreamCL", "diagnostic of dual_stream: its checkpoint predicting with "
           "subnetwork B (the residual-encoder partner) alone (nnUNet_semi_predict_member=b; no training of its own)",
           configurations=("3d_fullres",), predict_env=(("nnUNet_semi_predict_member", "b"),)),
    Method("cps_2x_single", "nnUNetTrainerCPS", "single-network control of cps_2x: its checkpoint predicting with "
           "network a alone (no training of its own)", budget="2x",
           predict_env=(("nnUNet_semi_predict_member", "a"),)),
    Method("self_training", "nnUNetTrainerLabeledOnly", "self-training (Bai et al. 2017): one round of pseudo-labels "
           "of the labeled-only model on every unlabeled image, then nnU-Net retrained on labeled + pseudo-labeled "
           "cases (nnunet_semi_self_training --rounds 1; what nnU-Net's maintainers suggest doing by hand)",
           runner="self_training"),
    Method("mmgl", "nnUNetTrainerMMGL", "MMGL (multi-scale multi-view global-local contrastive pretraining, "
           "then deeply supervised fine-tuning on the labeled cases)",
           pretrain=(("mmgl_global", ()), ("mmgl_local", ())), configurations=("2d",)),
)}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    device: str
    dataset_id: int
    prepare: Callable[[str, int], str]  # (nnUNet_raw, dataset id) -> dataset folder
    configuration: str
    plans: str  # plans identifier used for training (derived by ``make_plans`` when set)
    #: (E, I): nnU-Net trainer variants ``_<E>epochs_<I>its`` (CPU) or E: ``_<E>epochs`` (GPU)
    budget: str
    methods: Sequence[str]
    seeds: Sequence[int] = (0,)
    make_plans: Optional[dict] = None  # kwargs of nnunet_semi.apps.small_plans.make_small_plans
    preprocess_plans: bool = False  # the derived plans change the data (e.g. spacing): preprocess with them
    pretrain_budget: Tuple[str, ...] = ()  # extra nnunet_semi_pretrain arguments (epochs, iterations, batch)
    labels: Dict[int, str] = field(default_factory=dict)
    disable_tta: bool = True
    #: labeled draws (the benchmark protocol): ``prepare(raw, dataset_id + draw, draw=draw)`` converts draw ``draw``
    #: with the SAME test and validation cases; None = one dataset (the older profiles)
    draws: Optional[Sequence[int]] = None
    #: the all-labeled bound: ``bound(raw, bound_dataset_id)`` (same test and validation cases, every other
    #: training case labeled)
    bound: Optional[Callable[[str, int], str]] = None
    bound_dataset_id: Optional[int] = None
    #: the fold validates on held-out labeled validation cases: their Dice (nnU-Net's final validation) is recorded
    validation: bool = False
    #: the multiples of ``budget`` that methods with ``budget`` set may run ("2x", "4x", "8x"); the variant is derived
    #: (:func:`budget_suffix`), and must be a registered budget variant (``nnunet_semi.training.budgets``)
    longer_budgets: Tuple[str, ...] = ()


CPU_METHODS = ("labeled_only", "cps", "cps_paper", "ccm_cps", "ideal", "mean_teacher", "mean_teacher_dice", "uamt", "entmin", "urpc", "mcnet", "dtc",
               "bcp", "pl_contrast", "mmgl", "fixmatch", "fixmatch_ce", "fixmatch_nocutmix", "unimatch")

HIPPOCAMPUS5_CPU = Profile(
    "hippocampus5-cpu",
    "MSD Hippocampus (real, ../shared/data), the first CPU accuracy profile (before the benchmark protocol: the "
    "test cases move with the conversion seed, no validation cases, CPS / FixMatch defaults chosen on its test "
    "cases): 5 labeled training cases (all 5 in "
    "training), 40 labeled cases held out as test, the other 155 training images + 130 MSD imagesTs as "
    "unlabeled; 2d, plans with 16..128 features and batch 32 labeled (+ the method's unlabeled batch), "
    "40 epochs x 50 iterations, no test-time mirroring. The labeled-only reference is not converged "
    "on this budget: 70.3 mean foreground Dice over 3 seeds, and 2.5x the iterations add 1.7 points (seed 0); "
    "its pseudo Dice on its 5 training cases ends at 0.93, which measures the fit of the training cases only.",
    "cpu", 953, datasets.hippocampus_5_labeled, "2d", "nnUNetPlansBench16", "_40epochs_50its", CPU_METHODS,
    seeds=(0, 1, 2), make_plans=dict(base_features=16, max_features=128, batch_size=32, configurations=["2d"]),
    pretrain_budget=("--epochs", "20", "--iters-per-epoch", "50", "--batch-size", "32"),
    labels={1: "anterior", 2: "posterior"})

ACDC3_CPU = Profile(
    "acdc3-cpu",
    "ACDC from ../shared/data/acdc_h5 (SSL4MIS h5) under the benchmark protocol: 3 labeled patients (draw 0: "
    "SSL4MIS's own 3; draws 1, 2: seeded draws), 5 held-out labeled validation patients (the same for every draw; "
    "nnU-Net's fold validates on them: settings are chosen there), the other 62 training patients unlabeled, test = "
    "the 10 val.list patients (20 volumes), the same for every draw and read once per final setting; 2d at half "
    "in-plane resolution (3.0 mm; patch 128 x 128), plans with 8..64 features and batch 8 labeled (+ the method's "
    "unlabeled batch, 8), 40 epochs x 50 iterations, no test-time mirroring; bound: all 65 training patients labeled.",
    "cpu", 970, datasets.acdc_3_labeled_draw, "2d", "nnUNetPlansBench8LowRes", "_40epochs_50its",
    ("labeled_only", "cps", "fixmatch", "labeled_only_ensemble", "labeled_only_2x_ensemble", "cps_single",
     "cps_2x_single", "all_labeled", "labeled_only_2x",
     "labeled_only_4x", "labeled_only_8x", "all_labeled_4x", "cps_2x", "cps_4x", "fixmatch_2x", "self_training", "unimatch", "unimatch_ce", "unimatch_ce_2x", "cps_nobg", "cps_present", "cps_rampup", "fixmatch_sqdice", "fixmatch_present",
     "fixmatch_rampup", "fixmatch_tau80", "fixmatch_tau0", "fixmatch_cropflip", "fixmatch_gate", "cps_gate", "fixmatch_gate_2x", "fixmatch_ce_2x", "fixmatch_sat", "fixmatch_sat_lcc", "cps_paper", "fixmatch_ce", "ccm_cps", "ideal", "mmgl", "pl_contrast", "pl_contrast_pi", "bcp", "bcp_2x"),
    seeds=(0, 1, 2), make_plans=dict(base_features=8, max_features=64, batch_size=8, configurations=["2d"],
                                     spacing_factor=2.0),
    preprocess_plans=True,
    pretrain_budget=("--epochs", "20", "--iters-per-epoch", "50", "--batch-size", "16"),
    labels={1: "RV", 2: "Myo", 3: "LV"}, draws=(0, 1, 2), bound=datasets.acdc_all_labeled, bound_dataset_id=979,
    validation=True,
    longer_budgets=("2x", "4x", "8x"))

_PROTOCOL_METHODS_2D = ("labeled_only", "cps", "fixmatch", "labeled_only_ensemble", "cps_single", "all_labeled", "labeled_only_2x",
                        "cps_2x", "unimatch", "unimatch_ce", "fixmatch_sat", "fixmatch_sat_lcc", "fixmatch_tau0", "fixmatch_cropflip",
                        "fixmatch_gate", "cps_gate", "fixmatch_ce")
HIPPOCAMPUS5_2D_CPU = Profile(
    "hippocampus5-2d-cpu",
    "MSD Hippocampus (real, ../shared/data) under the benchmark protocol: 5 labeled cases per draw (draws 0, 1, 2: "
    "RandomState(draw) over the cases that are neither test nor validation), 40 test and 10 validation cases drawn "
    "once with RandomState(1000) and the same for every draw, the other 145 training images + 130 MSD imagesTs "
    "unlabeled; 2d, the plans and budget of hippocampus5-cpu (16..128 features, batch 32 + 32, 40 x 50 "
    "iterations), no test-time mirroring; bound: all 150 non-test, non-validation cases labeled.",
    "cpu", 980, datasets.hippocampus_5_labeled_draw, "2d", "nnUNetPlansBench16", "_40epochs_50its",
    _PROTOCOL_METHODS_2D, seeds=(0, 1, 2),
    make_plans=dict(base_features=16, max_features=128, batch_size=32, configurations=["2d"]),
    labels={1: "anterior", 2: "posterior"}, draws=(0, 1, 2), bound=datasets.hippocampus_all_labeled,
    bound_dataset_id=989, validation=True, longer_budgets=("2x",))
HIPPOCAMPUS5_3D_CPU = replace(
    HIPPOCAMPUS5_2D_CPU, name="hippocampus5-3d-cpu",
    description="hippocampus5-2d-cpu's cases (the same labeled draws, validation and test cases, case for case) in "
                "3d_fullres: small 3D plans (8..64 features, batch 4 labeled + 4 unlabeled), 40 x 50 iterations, no "
                "test-time mirroring.",
    configuration="3d_fullres", plans="nnUNetPlansBench3d8",
    methods=("labeled_only", "cps", "fixmatch", "dual_stream", "labeled_only_ensemble", "cps_single",
             "dual_stream_single", "all_labeled",
             "labeled_only_2x", "cps_2x", "unimatch", "unimatch_ce", "fixmatch_sat", "fixmatch_sat_lcc", "fixmatch_tau0",
             "fixmatch_cropflip", "fixmatch_gate", "cps_gate", "fixmatch_ce", "fixmatch_ce_2x", "dual_stream_gate",
             "dual_stream_b", "dual_stream_gate_noreg", "dual_stream_gate_regmean",
             # the controls of cps_2x: its network a alone, two labeled-only networks at 2x ensembled
             "cps_2x_single", "labeled_only_2x_ensemble",
             # the 2x reference moved +1.63 over 1x: does it still move between 2x and 4x?
             "labeled_only_4x"),
    make_plans=dict(base_features=8, max_features=64, batch_size=4, configurations=["3d_fullres"]),
    longer_budgets=("2x", "4x"))

PROFILES: Dict[str, Profile] = {p.name: p for p in (
    HIPPOCAMPUS5_CPU,
    ACDC3_CPU,
    HIPPOCAMPUS5_2D_CPU,
    HIPPOCAMPUS5_3D_CPU,
    # the same profile on other draws of which cases are labeled / test: only the conversion seed differs
    *(replace(HIPPOCAMPUS5_CPU, name=f"hippocampus5-cpu-split{k}", dataset_id=960 + k,
              prepare=functools.partial(datasets.hippocampus_5_labeled, split_seed=k),
              description=f"hippocampus5-cpu with another draw of which cases are labeled / test (conversion seed "
                          f"{k} instead of 0); everything else is the same (plans, budget, unlabeled pool size). "
                          "Measures how much the reference and the gain depend on which 5 cases are labeled.")
      for k in (1, 2, 3, 4)),
    Profile(
        "hippocampus-cpu",
        "MSD Hippocampus (real, ../shared/data): 5 labeled training cases, 40 labeled cases held out as test, the "
        "other 155 training images + 130 MSD imagesTs as unlabeled; 2d, small plans (8..64 features, batch 8 + 8), "
        "20 epochs x 50 iterations, no test-time mirroring.",
        "cpu", 951, datasets.hippocampus_5_labeled, "2d", "nnUNetPlansBench", "_20epochs_50its", CPU_METHODS,
        seeds=(0,), make_plans=dict(base_features=8, max_features=64, batch_size=8, configurations=["2d"]),
        pretrain_budget=("--epochs", "5", "--iters-per-epoch", "20", "--batch-size", "16"),
        labels={1: "anterior", 2: "posterior"}),
    Profile(
        "acdc-cpu",
        "ACDC from ../shared/data/acdc_h5 (SSL4MIS h5): 7 labeled patients (SSL4MIS list order), the other 63 "
        "training patients unlabeled, the 10 val.list patients (20 volumes) as test; 2d at half resolution "
        "(in-plane spacing 3.0 mm instead of 1.5 mm), small plans (8..64 features, batch 8 + 8), 20 epochs x 50 "
        "iterations, no test-time mirroring.",
        "cpu", 952, datasets.acdc_7_labeled, "2d", "nnUNetPlansBenchLowRes", "_20epochs_50its", CPU_METHODS,
        seeds=(0,), make_plans=dict(base_features=8, max_features=64, batch_size=8, configurations=["2d"],
                                    spacing_factor=2.0),
        preprocess_plans=True,
        pretrain_budget=("--epochs", "5", "--iters-per-epoch", "20", "--batch-size", "16"),
        labels={1: "RV", 2: "Myo", 3: "LV"}),
    Profile(
        "acdc3-gpu",
        "ACDC, SSL4MIS split, 3 labeled patients, nnU-Net's default 2d plans, 1000 epochs (nnU-Net's budget); "
        "published best mean Dice 89.86 (the target).",
        "cuda", 27, datasets.acdc_3_labeled, "2d", "nnUNetPlans", "", CPU_METHODS, seeds=(0, 1, 2),
        labels={1: "RV", 2: "Myo", 3: "LV"}, disable_tta=False),
    Profile(
        "acdc7-gpu",
        "ACDC, SSL4MIS split, 7 labeled patients, nnU-Net's default 2d plans, 1000 epochs; published best mean Dice "
        "90.85 (the target).",
        "cuda", 28, datasets.acdc_7_labeled, "2d", "nnUNetPlans", "", CPU_METHODS, seeds=(0, 1, 2),
        labels={1: "RV", 2: "Myo", 3: "LV"}, disable_tta=False),
    Profile(
        "la8-gpu",
        "Left atrium (UA-MT h5 release, pass LA_SOURCE), 8 labeled of 80, nnU-Net's default 3d_fullres plans, 1000 "
        "epochs.",
        "cuda", 29, datasets.la_8_labeled, "3d_fullres", "nnUNetPlans", "",
        CPU_METHODS + ("dual_stream",), seeds=(0, 1, 2), labels={1: "LA"}, disable_tta=False),
)}


_BUDGET = re.compile(r"^_(\d+)epochs(_\d+its)?$")


def budget_suffix(profile: Profile, multiple: str) -> str:
    """The budget variant of ``multiple`` ("2x") times the profile's budget: the epochs multiplied, the iterations per
    epoch kept (``_40epochs_50its`` -> ``_80epochs_50its``; ``_500epochs`` -> ``_1000epochs``)."""
    match = _BUDGET.match(profile.budget)
    if match is None or not re.fullmatch(r"\d+x", multiple):
        raise ValueError(f"profile {profile.name}: cannot take {multiple!r} of budget {profile.budget!r}")
    return f"_{int(match.group(1)) * int(multiple[:-1])}epochs{match.group(2) or ''}"


def trainer_name(method: Method, profile: Profile) -> str:
    if method.budget is None:
        return method.trainer + profile.budget
    if method.budget not in profile.longer_budgets:
        raise ValueError(f"profile {profile.name} has no {method.budget} budget for method {method.key} "
                         f"(its longer_budgets: {list(profile.longer_budgets)})")
    return method.trainer + budget_suffix(profile, method.budget)


def methods_of(profile: Profile, keys: Optional[Sequence[str]] = None) -> List[Method]:
    keys = list(keys) if keys else list(profile.methods)
    unknown = [k for k in keys if k not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    return [METHODS[k] for k in keys if profile.configuration in METHODS[k].configurations]
