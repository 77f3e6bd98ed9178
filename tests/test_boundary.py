"""HD95, Hausdorff distance and ASSD on masks whose distances are solved by hand."""
import math

import numpy as np
import pytest

from tfuad.metrics import (
    MetricInputError,
    average_surface_distance,
    boundary_metrics,
    hausdorff_distance,
    hd95,
    surface_distances,
)


def _cubes():
    """A 4x4x4 cube and the same cube shifted by one voxel along axis 0."""
    a = np.zeros((9, 8, 8), bool)
    a[2:6, 2:6, 2:6] = True
    return a, np.roll(a, 1, axis=0)


def test_offset_cubes_with_anisotropic_spacing():
    # Each cube has 56 surface voxels (64 minus the 2x2x2 interior). From the first cube:
    #   back face (16 voxels, axis-0 index 2): nearest surface of the other is one voxel along axis 0 -> 2 mm
    #   side faces at indices 3, 4 (24) and the rim of the front face (12) lie on the other's surface -> 0
    #   front-face interior (4): inside the other cube, 1 voxel from its side faces along axis 1/2 -> 1 mm
    # The other direction is the mirror image. Union: 72 x 0, 8 x 1, 32 x 2.
    a, b = _cubes()
    d_ab, d_ba = surface_distances(a, b, spacing=(2.0, 1.0, 1.0))
    assert sorted(d_ab.tolist()) == [0.0] * 36 + [1.0] * 4 + [2.0] * 16
    assert sorted(d_ba.tolist()) == sorted(d_ab.tolist())
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert hausdorff_distance(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert average_surface_distance(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx((32 * 2 + 8 * 1) / 112)
    # isotropic 1 mm: the back faces are 1 mm away too: 72 x 0, 40 x 1
    assert hd95(a, b) == pytest.approx(1.0)
    assert average_surface_distance(a, b) == pytest.approx(40 / 112)
    # only the axis-0 spacing matters for the shift
    assert hd95(a, b, spacing=(0.5, 3.0, 3.0)) == pytest.approx(0.5)


def test_line_and_point_union_versus_max_pooling():
    # A: 20 voxels along axis 2, B: its first voxel. A -> B: 0, 1, ..., 19; B -> A: 0.
    a = np.zeros((3, 3, 20), bool)
    a[1, 1, :] = True
    b = np.zeros_like(a)
    b[1, 1, 0] = True
    # union of 21 distances [0, 0, 1, ..., 19]: 95th percentile at rank 0.95 * 20 = 19 -> 18
    assert hd95(a, b) == pytest.approx(18.0)
    # max of the directed 95th percentiles: rank 0.95 * 19 = 18.05 in 0..19 -> 18.05; and 0
    assert hd95(a, b, pooling="max") == pytest.approx(18.05)
    assert hausdorff_distance(a, b) == pytest.approx(19.0)
    assert average_surface_distance(a, b) == pytest.approx(sum(range(20)) / 21)
    half = boundary_metrics(a, b, spacing=(1.0, 1.0, 0.5))
    assert half == pytest.approx({"hd95": 9.0, "hausdorff": 9.5, "assd": sum(range(20)) / 21 / 2})
    assert hd95(b, a) == hd95(a, b)


def test_mask_touching_the_array_border_has_surface_there():
    # A fills the whole 3x3x3 array: its surface is all 26 outer voxels; B is the centre voxel.
    a = np.ones((3, 3, 3), bool)
    b = np.zeros_like(a)
    b[1, 1, 1] = True
    # from A: 6 face neighbours at 1, 12 edge voxels at sqrt 2, 8 corners at sqrt 3; from B: 1
    expected = (6 * 1 + 12 * math.sqrt(2) + 8 * math.sqrt(3) + 1) / 27
    assert average_surface_distance(a, b) == pytest.approx(expected)
    assert hausdorff_distance(a, b) == pytest.approx(math.sqrt(3))


def test_identical_and_empty_masks():
    a, _ = _cubes()
    assert boundary_metrics(a, a, spacing=(1, 2, 3)) == {"hd95": 0.0, "hausdorff": 0.0, "assd": 0.0}
    empty = np.zeros_like(a)
    assert all(math.isnan(v) for v in boundary_metrics(empty, empty).values())
    assert hd95(a, empty) == math.inf and hd95(empty, a) == math.inf
    assert average_surface_distance(empty, a) == math.inf
    d_ab, d_ba = surface_distances(a, empty)
    assert d_ab.size == 56 and np.isinf(d_ab).all() and d_ba.size == 0


def test_surface_connectivity():
    # a 3D plus: the centre has all 6 face neighbours (interior for face erosion) but not all 26
    plus = np.zeros((3, 3, 3), bool)
    plus[1, 1, :] = plus[1, :, 1] = plus[:, 1, 1] = True
    centre = np.zeros_like(plus)
    centre[1, 1, 1] = True
    d_face, _ = surface_distances(plus, centre, connectivity=1)
    assert sorted(d_face.tolist()) == [1.0] * 6                 # the six arm tips, 1 voxel from the centre
    d_full, _ = surface_distances(plus, centre, connectivity=3)
    assert sorted(d_full.tolist()) == [0.0] + [1.0] * 6         # the centre is surface too


@pytest.mark.parametrize("kwargs", [
    {"spacing": (1.0, 1.0)},
    {"spacing": (1.0, 0.0, 1.0)},
    {"spacing": "abc"},
    {"percentile": 0},
    {"percentile": 101},
    {"pooling": "mean"},
    {"connectivity": 4},
])
def test_bad_options_raise_typed_errors(kwargs):
    a, b = _cubes()
    with pytest.raises(MetricInputError):
        hd95(a, b, **kwargs)


def test_bad_masks_raise_typed_errors():
    a, b = _cubes()
    with pytest.raises(MetricInputError, match="shape"):
        hd95(a, b[:-1])
    with pytest.raises(MetricInputError, match="binary"):
        hd95(a * 2, b)
