"""Install tfuad.

Only ``tfuad*`` import names are installed: the top-level ``cli/`` and ``export/``
folders become ``tfuad.cli`` and ``tfuad.export``.
"""
from setuptools import find_packages, setup

_core = find_packages(include=["tfuad", "tfuad.*"])
_mapped = {"tfuad.cli": "cli", "tfuad.export": "export"}

setup(
    name="tfuad",
    version="0.1.0",
    description="Unsupervised anomaly segmentation in brain MRI with TensorFlow 2 / Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_core + list(_mapped),
    package_dir={"tfuad": "tfuad", **_mapped},
    include_package_data=False,
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-probability[tf]==0.25.*",
        "nibabel>=5.2",
        "numpy>=1.26",
        "scipy>=1.11",
        "click>=8.1",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        "nilearn>=0.11",
        "tqdm>=4.66",
        "tensorboard>=2.19",
        "SimpleITK>=2.5",
    ],
    extras_require={
        "serving": ["tensorflow-serving-api==2.21.*"],
        "test": ["pytest>=8", "nbmake>=1.5", "ipykernel>=6", "tensorflow-serving-api==2.21.*", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["tfuad=tfuad.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
