"""Affine registration of one image to the MNI template with ITK (rigid, then affine; Mattes mutual information).

The reference's ANTs recipe in spirit (moments initialisation, rigid then affine, MI, 3 levels) at a fraction of
the cost (template at 2 mm, 10 % of its voxels in the metric); an image with its skull goes to a whole-head one."""

from __future__ import annotations

import itk
import numpy as np

from scripts.data.template import head_template, mni_template

#: Foreground volumes above this (ml) are a head with skull and scalp (adult brains, CSF included, are ~1.2-2 l;
#: the whole-head template's foreground is 3.5 l, Colin27's 3.7 l, the brain-only templates' ~1.8-1.9 l).
HEAD_ML = 2700.0


def foreground(image: np.ndarray) -> np.ndarray:
    """The head or brain in an image: above half the Otsu threshold of the smoothed non-background voxels, largest
    component, holes filled (background noise adds none)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    data = ndimage.gaussian_filter(np.asarray(image, np.float32), 1.0)
    values = data[data > data.min()]
    if values.size < 2 or values.min() == values.max():
        return np.zeros(data.shape, bool)
    mask = data > 0.5 * threshold_otsu(values)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    return ndimage.binary_fill_holes(mask)


def has_skull(image: np.ndarray, affine: np.ndarray) -> tuple[bool, float]:
    """Whether the image shows skull and scalp, and the foreground volume (ml, :func:`foreground`) that decided it."""
    mask = foreground(image)
    ml = float(mask.sum() * abs(np.linalg.det(np.asarray(affine, float)[:3, :3])) / 1000.0)
    return ml > HEAD_ML, ml


def registration_overlap(registered: np.ndarray, brain: np.ndarray, skull_stripped: bool) -> float:
    """How well a registered image sits on the template: Dice of its :func:`foreground` with the template's brain
    mask, or for a head with its skull (whose foreground is larger than the brain by design) the share of the
    template brain that the head covers. Near 1 for a good registration; a failed one, or a non-brain, is far lower."""
    fg, brain = foreground(registered), np.asarray(brain, bool)
    both = float(np.logical_and(fg, brain).sum())
    if not skull_stripped:
        return both / max(float(brain.sum()), 1.0)
    return 2 * both / max(float(fg.sum() + brain.sum()), 1.0)


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
    optimizer.SetScalesEstimator(itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New(Metric=metric))
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
    image: np.ndarray,
    affine: np.ndarray,
    whole_head: bool = False,
    iterations: int = 100,
    sampling: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """RAS ``M`` with ``native_world = M @ template_world`` for a 3D ``image`` (``whole_head``: it has its skull)."""
    template = head_template(2.0) if whole_head else mni_template(2.0)
    fixed, moving = _to_itk(template.image, template.affine), _to_itk(image, affine)
    rigid = itk.VersorRigid3DTransform[itk.D].New()
    init = itk.CenteredTransformInitializer[type(rigid), _F3, _F3].New(
        Transform=rigid, FixedImage=fixed, MovingImage=moving
    )
    init.MomentsOn()
    init.InitializeTransform()
    _optimise(rigid, fixed, moving, iterations, sampling, seed)
    full = itk.AffineTransform[itk.D, 3].New(
        Center=rigid.GetCenter(), Matrix=rigid.GetMatrix(), Translation=rigid.GetTranslation()
    )
    _optimise(full, fixed, moving, iterations, sampling, seed)
    matrix = np.asarray(itk.array_from_matrix(full.GetMatrix()), float)
    center = np.asarray(full.GetCenter(), float)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = np.asarray(full.GetTranslation(), float) + center - matrix @ center
    return _FLIP @ lps @ _FLIP
