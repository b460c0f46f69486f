"""Self-supervised pretraining of nnU-Net's planned networks, registered by name (``nnunet_semi_pretrain -m NAME``).

Each method writes ``$nnUNet_results/<Dataset>/<Method>Pretrain__<plans>__<configuration>/fold_<f>/`` with
``checkpoint_final.pth`` (``network_weights`` keyed like the fine-tuning trainer's network), ``progress.png`` and a
resumable ``checkpoint_latest.pth``.
"""
