"""tfuad: unsupervised anomaly segmentation in brain MRI with TensorFlow 2 / Keras.

The package follows the pipeline::

    tfuad.data            NIfTI I/O, dataset layouts, preprocessing, tf.data slices, demo data
    tfuad.models          Baur et al. 2018 AE/VAE/GAN zoo, Chen et al. 2020 VAE/GMVAE priors
    tfuad.detection       residual maps and MAP-TV restoration
    tfuad.postprocessing  median filter, brain-mask erosion, small components, thresholds
    tfuad.metrics         Dice, AUROC/AUPRC, lesion-wise detection, reports
    tfuad.export          SavedModel export with TF-Serving signatures
    tfuad.cli             the ``tfuad`` command
"""
__version__ = "0.1.0"

from tfuad.errors import TfuadError  # noqa: F401
