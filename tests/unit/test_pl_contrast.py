"""Pieces of nnUNetTrainerPLContrast (Chaitanya et al. 2023): the local contrastive loss (eq. 3-4) against a NumPy
loop recomputation in intra and inter mode, 2D and 3D; anchor sampling; the contrastive head; the pseudo-label
schedule; and trainer-level steps on synthetic plans (refreshes at the configured iterations, no pseudo-label in
the segmentation loss by default, exact checkpoint round trip)."""
import math

import numpy as np
import pytest
import torch

from nnunet_semi.losses.local_contrastive import IGNORE, local_contrastive_loss, sample_anchor_pixels
from nnunet_semi.networks.contrastive_head import attach_contrastive_head, pop_contrastive_features
from nnunet_semi.training.pl_contrast import foreground_dice, pseudo_label_schedule

TAU = 0.1


def reference_loss(z, labels, anchors, num_classes, tau, mode, background_negative=True):
    """Eq. 3-4 with explicit loops over pairs (x, x'), classes c and anchor pixels i (float64 NumPy)."""
    z = z.detach().double().numpy()
    labels = labels.numpy()
    b_count, d = z.shape[:2]
    zf = z.reshape(b_count, d, -1)
    lf = labels.reshape(b_count, -1)
    means, present = {}, {}
    for b in range(b_count):
        for k in range(num_classes):
            idx = [n for n in range(lf.shape[1]) if lf[b, n] == k]
            present[b, k] = len(idx) > 0 and (k > 0 or background_negative)
            if idx:
                means[b, k] = sum(zf[b, :, n] for n in idx) / len(idx)

    def cos(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    pair_losses = []
    for x in range(b_count):
        partners = [x] if mode == "intra" else range(b_count)
        for xp in partners:
            class_terms = []
            for c in range(1, num_classes):
                rows = [a for a in anchors.tolist() if a[0] == x and a[1] == c]
                if not rows or not present[xp, c]:
                    continue
                terms = []
                for _, _, i in rows:
                    a = zf[x, :, i]
                    num = math.exp(cos(a, means[xp, c]) / tau)
                    den = num + sum(math.exp(cos(a, means[xp, k]) / tau) for k in range(num_classes)
                                    if k != c and present[xp, k])
                    terms.append(-math.log(num / den))
                class_terms.append(sum(terms) / len(terms))
            if class_terms:
                pair_losses.append(sum(class_terms) / len(class_terms))
    return sum(pair_losses) / len(pair_losses)


def _batch(ndim, seed=0, b=4, k=4, d=5):
    g = torch.Generator().manual_seed(seed)
    spatial = (6, 5) if ndim == 2 else (3, 4, 5)
    z = torch.randn(b, d, *spatial, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (b, *spatial), generator=g)
    labels[0][labels[0] == 2] = 1  # image 0 lacks class 2
    labels[1].view(-1)[:4] = IGNORE  # ignored pixels
    labels[2][labels[2] == 3] = 0  # image 2 lacks class 3
    return z, labels, k


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["intra", "inter"])
@pytest.mark.parametrize("background_negative", [True, False])
def test_local_contrastive_loss_equals_loop_recomputation(ndim, mode, background_negative):
    z, labels, k = _batch(ndim)
    torch.manual_seed(3)
    anchors = sample_anchor_pixels(labels, k, pixels_per_class=3)
    z.requires_grad_(True)
    loss = local_contrastive_loss(z, labels, k, anchors=anchors, temperature=TAU, mode=mode,
                                  background_negative=background_negative)
    expected = reference_loss(z, labels, anchors, k, TAU, mode, background_negative)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_intra_and_inter_differ_and_inter_sees_other_images():
    z, labels, k = _batch(2, seed=1)
    torch.manual_seed(0)
    anchors = sample_anchor_pixels(labels, k, 3)
    intra = local_contrastive_loss(z, labels, k, anchors=anchors, mode="intra")
    inter = local_contrastive_loss(z, labels, k, anchors=anchors, mode="inter")
    assert intra.item() != pytest.approx(inter.item(), rel=1e-3)
    # intra is blind to the other images' features, inter is not
    z2 = z.clone()
    z2[1:] = torch.randn_like(z2[1:])
    only_first = anchors[anchors[:, 0] == 0]
    a = local_contrastive_loss(z, labels, k, anchors=only_first, mode="intra")
    b = local_contrastive_loss(z2, labels, k, anchors=only_first, mode="intra")
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    assert local_contrastive_loss(z, labels, k, anchors=only_first, mode="inter").item() != pytest.approx(
        local_contrastive_loss(z2, labels, k, anchors=only_first, mode="inter").item(), rel=1e-6)


def test_anchor_sampling_draws_per_image_and_foreground_class():
    labels = torch.tensor([[[0, 1, 1, 1, 1], [2, 2, 0, 0, IGNORE]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]])
    torch.manual_seed(0)
    anchors = sample_anchor_pixels(labels, 3, pixels_per_class=3)
    flat = labels.reshape(2, -1)
    groups = {}
    for b, c, i in anchors.tolist():
        assert flat[b, i] == c and c > 0
        groups.setdefault((b, c), []).append(i)
    assert {g: len(v) for g, v in groups.items()} == {(0, 1): 3, (0, 2): 2, (1, 1): 1}
    assert all(len(set(v)) == len(v) for v in groups.values())  # without replacement
    with pytest.raises(ValueError, match="pixels_per_class"):
        sample_anchor_pixels(labels, 3, 0)


def test_loss_edge_cases_and_errors():
    z = torch.randn(2, 4, 5, 5, requires_grad=True)
    background = torch.zeros(2, 5, 5, dtype=torch.long)
    loss = local_contrastive_loss(z, background, 3)  # no foreground: no term, 0 attached to the graph
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="mode"):
        local_contrastive_loss(z, background, 3, mode="global")
    with pytest.raises(ValueError, match="labels"):
        local_contrastive_loss(z, background[:, :4], 3)
    # a perfectly separated feature map has a lower loss than a random one
    labels = torch.zeros(2, 5, 5, dtype=torch.long)
    labels[:, :2] = 1
    labels[:, 3:] = 2
    separated = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 10
    torch.manual_seed(0)
    assert local_contrastive_loss(separated, labels, 3).item() < 1e-3
    assert local_contrastive_loss(torch.randn(2, 4, 5, 5), labels, 3).item() > 0.1


def test_pseudo_label_schedule_maps_the_paper_onto_nnunet():
    # paper: 5000 supervised + 3 x 5000 joint iterations; nnU-Net: 1000 epochs x 250 iterations
    assert pseudo_label_schedule(1000 * 250) == (62500, [62500, 125000, 187500])
    assert [t // 250 for t in pseudo_label_schedule(1000 * 250)[1]] == [250, 500, 750]  # epochs
    assert pseudo_label_schedule(10) == (2, [2, 4, 6])  # the CLI test's 2 epochs x 5 iterations
    assert pseudo_label_schedule(100, num_steps=2, stage1_iterations=10, interval=30) == (10, [10, 40])
    with pytest.raises(ValueError):
        pseudo_label_schedule(10, num_steps=0)


def test_foreground_dice():
    a = torch.tensor([[[0, 1, 1, 2]], [[0, 0, 0, 0]]])
    b = torch.tensor([[[0, 1, 0, 2]], [[0, 0, 0, 0]]])
    torch.testing.assert_close(foreground_dice(a, b, 3), torch.tensor([(2 / 3 + 1.0) / 2, 1.0], dtype=torch.double))


# ------------------------------------------------------------------------- contrastive head on a planned U-Net

def _plans_dict(ndim: int) -> dict:
    """Minimal nnU-Net plans with one small PlainConvUNet configuration ('cfg') of ``ndim`` dimensions."""
    conv, norm = ("torch.nn.modules.conv.Conv2d", "torch.nn.modules.instancenorm.InstanceNorm2d") if ndim == 2 else \
        ("torch.nn.modules.conv.Conv3d", "torch.nn.modules.instancenorm.InstanceNorm3d")
    strides = [[1] * ndim, [2] * ndim, [2] * ndim]
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": conv,
                            "kernel_sizes": [[3] * ndim] * 3, "strides": strides, "n_conv_per_stage": [1, 1, 1],
                            "n_conv_per_stage_decoder": [1, 1], "conv_bias": True, "norm_op": norm,
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    patch = [16, 12] if ndim == 2 else [8, 12, 8]
    return {"dataset_name": "Dataset999_Test", "plans_name": "p", "image_reader_writer": "SimpleITKIO",
            "transpose_forward": list(range(ndim)), "transpose_backward": list(range(ndim)),
            "original_median_spacing_after_transp": [1.0] * ndim, "original_median_shape_after_transp": patch,
            "foreground_intensity_properties_per_channel": {}, "label_manager": "LabelManager",
            "configurations": {"cfg": {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor",
                                       "batch_size": 2, "patch_size": patch, "spacing": [1.0] * ndim,
                                       "median_image_size_in_voxels": patch,
                                       "normalization_schemes": ["ZScoreNormalization"],
                                       "use_mask_for_norm": [False], "batch_dice": True, "architecture": arch,
                                       "resampling_fn_data": "resample_data_or_seg_to_shape",
                                       "resampling_fn_seg": "resample_data_or_seg_to_shape",
                                       "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
                                       "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                                       "resampling_fn_probabilities_kwargs": {}}}}


DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 2,
                "file_ending": ".nii.gz"}


def _trainer(tmp_path, monkeypatch, ndim, cls=None, epochs=2, iterations=5):
    from nnunet_semi.training.pl_contrast import nnUNetTrainerPLContrast

    cls = cls or nnUNetTrainerPLContrast
    for var in ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw"):
        (tmp_path / var).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / var))
    data_folder = tmp_path / "nnUNet_preprocessed" / "Dataset999_Test" / "x"
    data_folder.mkdir(parents=True, exist_ok=True)
    (data_folder / "case.b2nd").touch()
    monkeypatch.delenv("nnUNet_semi_seed", raising=False)
    torch.manual_seed(0)
    trainer = cls({**_plans_dict(ndim), "continue_training": False}, "cfg", 0, DATASET_JSON,
                  device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch = epochs, iterations
    trainer.initialize()
    return trainer


def _targets(trainer, labels):
    """nnU-Net's deep-supervision targets (nearest-exact downsampling) of full-resolution labels."""
    out = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [round(s * f) for s, f in zip(labels.shape[1:], scale)]
        out.append(torch.nn.functional.interpolate(labels[:, None].float(), shape, mode="nearest-exact"))
    return out


def _random_batch(trainer, generator):
    patch = trainer.configuration_manager.patch_size
    data = torch.randn(2, 1, *patch, generator=generator)
    labels = torch.randint(0, 3, (2, *patch), generator=generator)
    return {"data": data, "target": _targets(trainer, labels)}, torch.randn(2, 1, *patch, generator=generator)


@pytest.mark.parametrize("ndim", [2, 3])
def test_head_is_in_the_weights_and_eval_forward_returns_the_segmentation(tmp_path, monkeypatch, ndim):
    from nnunet_semi.training.pl_contrast import nnUNetTrainerPLContrast

    trainer = _trainer(tmp_path, monkeypatch, ndim)
    net = trainer.network
    patch = trainer.configuration_manager.patch_size
    assert any(k.startswith("contrastive_head.") for k in net.state_dict())
    x = torch.randn(2, 1, *patch)
    net.train()
    out = net(x)
    z = pop_contrastive_features(net)
    assert isinstance(out, list) and tuple(out[0].shape) == (2, 3, *patch)
    assert tuple(z.shape) == (2, 16, *patch)  # D = 16 at the input resolution
    # the predictor: built without deep supervision, strict load of network_weights, eval forward = logits only
    predictor_net = nnUNetTrainerPLContrast.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, 3, enable_deep_supervision=False)
    predictor_net.load_state_dict(net.state_dict())
    predictor_net.eval()
    with torch.no_grad():
        logits = predictor_net(x)
    assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == (2, 3, *patch)
    with pytest.raises(RuntimeError, match="no contrastive features"):
        pop_contrastive_features(predictor_net)  # eval mode computes no projection


@pytest.mark.parametrize("ndim", [2, 3])
def test_steps_refresh_at_the_schedule_and_keep_pseudo_labels_out_of_the_seg_loss(tmp_path, monkeypatch, ndim):
    trainer = _trainer(tmp_path, monkeypatch, ndim)
    assert trainer.schedule() == (2, [2, 4, 6])
    calls = []
    real_loss = trainer.loss

    def spy(output, target):
        value = real_loss(output, target)
        grad_u = torch.autograd.grad(value, current["data_u"], retain_graph=True, allow_unused=True)[0]
        calls.append({"batch": output[0].shape[0], "target": target, "grad_u": grad_u})
        return value

    trainer.loss = spy
    generator = torch.Generator().manual_seed(0)
    current = {}
    params = dict(trainer.network.named_parameters())
    for epoch in range(2):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        for it in range(5):
            t = epoch * 5 + it
            batch, data_u = _random_batch(trainer, generator)
            current["data_u"] = data_u.requires_grad_(True)
            trainer.dataloader_unlabeled = iter([{"data": data_u}])
            before = {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}
            previous_labeler = trainer.pseudo_labeler
            calls.clear()
            result = trainer.train_step(batch)
            assert len(calls) == 1 and calls[0]["batch"] == 2  # the labeled patches only
            assert all(torch.equal(a, b) for a, b in zip(calls[0]["target"], batch["target"], strict=True))
            head = [p for k, p in params.items() if k.startswith("contrastive_head.")]
            if t < 2:  # stage 1: no pseudo-labeler, no contrastive term, yet h_phi is in the graph (DDP)
                assert trainer.pseudo_labeler is None and result["contrastive_losses"] == 0.0
                assert head and all(p.grad is not None and p.grad.abs().sum() == 0 for p in head)
            else:
                assert result["contrastive_losses"] > 0 and result["pseudo_label_accepted"] == 1.0
                # the unlabeled data gets no gradient from the segmentation loss
                assert calls[0]["grad_u"] is None or calls[0]["grad_u"].abs().sum() == 0
                assert all(p.grad.abs().sum() > 0 for p in head)
            if t in (2, 4, 6):  # refreshed: the pseudo-labeler is the network as it was before this step's update
                assert trainer.pseudo_labeler is not previous_labeler
                for k, v in trainer.pseudo_labeler.state_dict().items():
                    assert torch.equal(v, before[k]), k
                assert not trainer.pseudo_labeler.training
                assert not any(p.requires_grad for p in trainer.pseudo_labeler.parameters())
            else:
                assert trainer.pseudo_labeler is previous_labeler
    assert trainer.pseudo_label_refreshes == [2, 4, 6] and trainer.pseudo_labeler_iteration == 6

    # exact round trip of the method state (what --c restores)
    state = trainer.extra_checkpoint_state()
    other = _trainer(tmp_path, monkeypatch, ndim)
    other.load_extra_checkpoint_state(state)
    assert other.pseudo_label_refreshes == [2, 4, 6] and other.pseudo_labeler_iteration == 6
    for k, v in trainer.pseudo_labeler.state_dict().items():
        assert torch.equal(v, other.pseudo_labeler.state_dict()[k])
    _, data_u = _random_batch(trainer, generator)
    assert torch.equal(trainer.estimate_pseudo_labels(data_u)[0], other.estimate_pseudo_labels(data_u)[0])


def test_ablation_puts_pseudo_labels_into_the_seg_loss(tmp_path, monkeypatch):
    from nnunet_semi.training.pl_contrast import nnUNetTrainerPLContrast_plInSeg

    trainer = _trainer(tmp_path, monkeypatch, 2, nnUNetTrainerPLContrast_plInSeg)
    trainer.stage1_iterations = 0
    calls = []
    real_loss = trainer.loss

    def spy(output, target):
        value = real_loss(output, target)
        grad_u = torch.autograd.grad(value, data_u, retain_graph=True, allow_unused=True)[0]
        calls.append({"batch": output[0].shape[0], "target": target, "grad_u": grad_u})
        return value

    trainer.loss = spy
    trainer.current_epoch = 0
    trainer.on_train_epoch_start()
    batch, data_u = _random_batch(trainer, torch.Generator().manual_seed(1))
    data_u.requires_grad_(True)
    trainer.dataloader_unlabeled = iter([{"data": data_u}])
    trainer.train_step(batch)
    call = calls[0]
    assert call["batch"] == 4 and call["grad_u"].abs().sum() > 0
    pseudo = trainer.estimate_pseudo_labels(data_u.detach())[0]
    assert torch.equal(call["target"][0][2:, 0].long(), pseudo)
    assert torch.equal(call["target"][0][:2], batch["target"][0])
    assert tuple(call["target"][1].shape[2:]) == tuple(batch["target"][1].shape[2:])


def test_quality_threshold_rejects_unstable_pseudo_labels(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, monkeypatch, 2)
    trainer.refresh_pseudo_labeler(0)
    data_u = torch.randn(3, 1, *trainer.configuration_manager.patch_size)
    trainer.pseudo_label_quality_threshold = 0.0
    assert trainer.estimate_pseudo_labels(data_u)[1].all()
    pseudo = trainer.estimate_pseudo_labels(data_u)[0]
    mirrored = torch.flip(trainer.pseudo_labeler(torch.flip(data_u, (2, 3))), (2, 3)).argmax(1)
    dice = foreground_dice(pseudo, mirrored, 3)
    assert (dice < 1).any()  # a random network is not mirror-equivariant
    trainer.pseudo_label_quality_threshold = float(dice.max()) - 1e-9
    accepted = trainer.estimate_pseudo_labels(data_u)[1]
    assert torch.equal(accepted, dice >= float(dice.max()) - 1e-9) and accepted.sum() >= 1


def test_attach_head_to_a_3d_unet_has_the_paper_layers():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    unet = PlainConvUNet(1, 3, (4, 8, 16), torch.nn.Conv3d, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), True,
                         torch.nn.InstanceNorm3d, {"affine": True}, nonlin=torch.nn.LeakyReLU)
    attach_contrastive_head(unet, 16)
    convs = [m for m in unet.contrastive_head.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(4, 4, (1, 1, 1)),
                                                                               (4, 16, (1, 1, 1))]


# ------------------------------------------------------------------------------- inter mode over 2 gloo ranks

WORLD = 2


def _ddp_batch(sizes):
    """Images whose labels contain every class (so every pair (x, x') is defined), split over ranks by ``sizes``."""
    g = torch.Generator().manual_seed(11)
    n = sum(sizes)
    z = torch.randn(n, 5, 4, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n, 4, 6), generator=g)
    labels[:, 0, :3] = torch.tensor([0, 1, 2])
    anchors = sample_anchor_pixels(labels, 3, 3)
    return z, labels, anchors


def _ddp_worker(rank: int, port: int, out_dir: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, sizes in (("equal", (2, 2)), ("unequal", (2, 1))):
            torch.manual_seed(0)
            z, labels, anchors = _ddp_batch(sizes)
            start, stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
            local_z = z[start:stop].clone().requires_grad_(True)
            local_anchors = anchors[(anchors[:, 0] >= start) & (anchors[:, 0] < stop)].clone()
            local_anchors[:, 0] -= start
            loss = local_contrastive_loss(local_z, labels[start:stop], 3, anchors=local_anchors, mode="inter",
                                          gather_distributed=True)
            loss.backward()
            results[name] = {"loss": loss.detach(), "grad": local_z.grad}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_inter_mode_gathers_the_class_means_of_all_ranks(tmp_path):
    import torch.multiprocessing as mp

    from tests.helpers import free_port

    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, sizes in (("equal", (2, 2)), ("unequal", (2, 1))):
        torch.manual_seed(0)
        z, labels, anchors = _ddp_batch(sizes)
        z.requires_grad_(True)
        global_loss = local_contrastive_loss(z, labels, 3, anchors=anchors, mode="inter")
        global_loss.backward()
        n = sum(sizes)
        # each rank: mean over its images' pairs with all n images; together: the single-process sum over pairs
        total = sum(results[r][name]["loss"].item() * sizes[r] * n for r in range(WORLD))
        assert total == pytest.approx(global_loss.item() * n * n, rel=1e-10), name
        if name == "equal":  # then the mean over ranks is the global loss and the gradient WORLD x its rows
            assert sum(results[r][name]["loss"].item() for r in range(WORLD)) / WORLD == pytest.approx(
                global_loss.item(), rel=1e-10)
            for r in range(WORLD):
                rows = slice(sum(sizes[:r]), sum(sizes[:r + 1]))
                torch.testing.assert_close(results[r][name]["grad"], WORLD * z.grad[rows], rtol=1e-9, atol=1e-12)


def test_two_step_stage1_trains_the_contrastive_loss_alone_on_the_labels(tmp_path, monkeypatch):
    """nnUNetTrainerLocalContrastPretrain (Table II "Two step Tr. (semi-sup)", stage 1): the step's loss is eq. 3-4
    at weight 1 on the full-resolution labels of the batch (the same anchors drawn again give the same value), no
    segmentation loss (the segmentation layers get an exactly zero gradient), and it needs no unlabeled stream."""
    from nnunet_semi.training.pl_contrast import nnUNetTrainerLocalContrastPretrain

    trainer = _trainer(tmp_path, monkeypatch, 2, cls=nnUNetTrainerLocalContrastPretrain)
    assert trainer.uses_unlabeled is False
    batch, _ = _random_batch(trainer, torch.Generator().manual_seed(3))
    net = trainer.network
    torch.manual_seed(11)
    loss, logged, curves = trainer.compute_losses(batch["data"], batch["target"], None)
    torch.manual_seed(11)
    net(batch["data"])
    z = pop_contrastive_features(net)
    labels = batch["target"][0][:, 0].long()
    expected = local_contrastive_loss(z, labels, 3, pixels_per_class=3, temperature=0.1, mode="inter",
                                      background_negative=True)
    assert 0.5 < expected.item() < 10.0
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-6, atol=1e-6)
    assert logged.item() == pytest.approx(expected.item(), rel=1e-6) and \
        curves["contrastive_losses"] == pytest.approx(expected.item(), rel=1e-6)
    net.zero_grad(set_to_none=False)
    loss.backward()
    for name, p in net.named_parameters():
        if ".seg_layers." in name:
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    encoder_grad = sum(p.grad.abs().sum().item() for n, p in net.named_parameters() if n.startswith("encoder."))
    head_grad = sum(p.grad.abs().sum().item() for n, p in net.named_parameters() if n.startswith("contrastive_head."))
    assert encoder_grad > 0 and head_grad > 0
