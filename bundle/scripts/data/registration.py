"""Affine registration of one image to the MNI template with ITK (rigid, then affine; Mattes mutual information).

Mirrors the reference's ANTs recipe in spirit (moments initialisation, rigid then affine, MI, 3 resolution levels)
at a fraction of the cost: the template is sampled at 2 mm and 10 % of its voxels feed the metric.
"""

from __future__ import annotations

import itk
import numpy as np

from scripts.data.template import mni_template

__all__ = ["register_to_template"]

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's physical space)
_F3 = itk.Image[itk.F, 3]


def _to_itk(array: np.ndarray, affine: np.ndarray) -> itk.Image:
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(array, np.float32).transpose(2, 1, 0)))
    lps = _FLIP @ np.asarray(affine, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
    return image


def _optimise(transform, fixed, moving, iterations: int, sampling: float, seed: int) -> None:
    metric = itk.MattesMutualInformationImageToImageMetricv4[_F3, _F3].New(NumberOfHistogramBins=32)
    optimizer = itk.RegularStepGradientDescentOptimizerv4[itk.D].New(
        LearningRate=1.0, MinimumStepLength=1e-4, NumberOfIterations=iterations, RelaxationFactor=0.5
    )
    scales = itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New(Metric=metric)
    optimizer.SetScalesEstimator(scales)
    method = itk.ImageRegistrationMethodv4[_F3, _F3].New(
        FixedImage=fixed, MovingImage=moving, Metric=metric, Optimizer=optimizer, InitialTransform=transform
    )
    method.SetInPlace(True)
    method.SetNumberOfLevels(3)
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SetMetricSamplingStrategy(itk.ImageRegistrationMethodv4Enums.MetricSamplingStrategy_RANDOM)
    method.SetMetricSamplingPercentage(sampling)
    method.MetricSamplingReinitializeSeed(seed)
    method.Update()


def register_to_template(
    image: np.ndarray, affine: np.ndarray, iterations: int = 100, sampling: float = 0.1, seed: int = 0
) -> np.ndarray:
    """4x4 RAS matrix ``M`` with ``native_world = M @ template_world`` for a single-channel 3D ``image``.

    Deterministic for a given ``seed``. Only the image is used, never a label.
    """
    template = mni_template(2.0)
    fixed = _to_itk(template.image, template.affine)
    moving = _to_itk(image, affine)
    rigid = itk.VersorRigid3DTransform[itk.D].New()
    init = itk.CenteredTransformInitializer[type(rigid), _F3, _F3].New(
        Transform=rigid, FixedImage=fixed, MovingImage=moving
    )
    init.MomentsOn()
    init.InitializeTransform()
    _optimise(rigid, fixed, moving, iterations, sampling, seed)
    full = itk.AffineTransform[itk.D, 3].New()
    full.SetCenter(rigid.GetCenter())
    full.SetMatrix(rigid.GetMatrix())
    full.SetTranslation(rigid.GetTranslation())
    _optimise(full, fixed, moving, iterations, sampling, seed)
    matrix = np.asarray(itk.array_from_matrix(full.GetMatrix()), float)
    center = np.asarray(full.GetCenter(), float)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = np.asarray(full.GetTranslation(), float) + center - matrix @ center
    return _FLIP @ lps @ _FLIP
