import re

from setuptools import find_packages, setup

# one version, in the package (``nnunet_semi.__version__``, printed by ``nnunet_semi --version``)
with open("nnunet_semi/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="nnunet-semi",
    version=VERSION,
    description="Semi- and self-supervised training for nnU-Net v2: unlabeled images inside nnU-Net's own workflow.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",  # as nnU-Net; full text in LICENSE
    license_files=["LICENSE"],
    keywords=["nnU-Net", "semi-supervised learning", "self-supervised pretraining", "medical image segmentation",
              "pseudo-labels", "contrastive learning", "deep learning", "PyTorch"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Healthcare Industry",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    # the project's own repository URL is added here when it is published; until then the framework it plugs into
    project_urls={
        "nnU-Net": "https://github.com/MIC-DKFZ/nnUNet",
        "nnU-Net documentation": "https://github.com/MIC-DKFZ/nnUNet/tree/master/documentation",
    },
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_semi", "nnunet_semi.*", "pretraining", "pretraining.*",
                                    "dataset_conversion", "dataset_conversion.*"]),
    # the nnUNet_extTrainer shim directory is deliberately not a package (see nnunet_semi/ext/README)
    package_data={"nnunet_semi": ["ext/*.py"]},
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch>=2.1",
        "batchgeneratorsv2>=0.3",
        "acvl-utils>=0.2",
        "SimpleITK>=2.2",
        "numpy>=1.24",
        "blosc2",
        "h5py>=3",
        "nibabel",  # NaN / Inf in NIfTI voxels (SimpleITK reads them as 0); nnunetv2 depends on it too
        "tqdm",
        "matplotlib",
    ],
    # W&B: nnU-Net's optional logger (nnUNet_wandb_enabled=1); in the test extra so that its test runs in CI
    extras_require={"wandb": ["wandb>=0.18"], "test": ["pytest>=7", "wandb>=0.18"]},
    entry_points={
        "console_scripts": [
            "nnunet_semi=nnunet_semi.__main__:main",
            "nnunet_semi_ext_trainer=nnunet_semi.apps.ext_trainer:ext_trainer_entry",
            "nnunet_semi_preprocess_unlabeled=nnunet_semi.data.unlabeled:preprocess_unlabeled_entry",
            "nnunet_semi_small_plans=nnunet_semi.apps.small_plans:small_plans_entry",
            "nnunet_semi_convert_msd=dataset_conversion.msd:convert_msd_entry",
            "nnunet_semi_convert_acdc=dataset_conversion.acdc:acdc_entry",
            "nnunet_semi_convert_la=dataset_conversion.la:la_entry",
            "nnunet_semi_convert_mmwhs=dataset_conversion.mmwhs:mmwhs_entry",
            "nnunet_semi_convert_pancreas=dataset_conversion.pancreas:pancreas_entry",
            "nnunet_semi_metrics=nnunet_semi.apps.metrics:metrics_entry",
            "nnunet_semi_demo=nnunet_semi.apps.demo:demo_entry",
            "nnunet_semi_pretrain=pretraining.cli:pretrain_entry",
            "nnunet_semi_pair_pretrained=nnunet_semi.pretrained.pairing:pair_entry",
            "nnunet_semi_self_training=nnunet_semi.apps.self_training:self_training_entry",
        ]
    },
)
