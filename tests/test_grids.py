"""Grid helpers: one signature for all, the old stiffness_1d(count, spacing, boundary) refused clearly."""

import pytest
import torch

from mms_manifolds.grids import grid_2d, grid_spacing, stiffness_1d, stiffness_2d, trapezoid_weights, uniform_nodes


@pytest.mark.parametrize("boundary", ["dirichlet", "periodic", "neumann"])
def test_every_1d_helper_takes_count_start_stop_boundary_and_they_agree(boundary):
    nodes = uniform_nodes(9, -1.0, 2.0, boundary)
    spacing = grid_spacing(9, -1.0, 2.0, boundary)
    assert torch.allclose(nodes[1:] - nodes[:-1], torch.full((8,), spacing, dtype=torch.float64))
    stiffness = stiffness_1d(9, -1.0, 2.0, boundary)
    assert stiffness.shape == (9, 9) and float(stiffness[1, 1]) == pytest.approx(2 / spacing)
    assert float(trapezoid_weights(9, -1.0, 2.0).sum()) == pytest.approx(3.0)


def test_2d_helpers_take_the_box_and_boundary_the_same_way():
    box = (0.0, 1.0, -1.0, 1.0)
    points = grid_2d(4, 5, box, "neumann")
    assert points.shape == (20, 2) and float(points[:, 1].min()) == -1.0
    assert stiffness_2d(4, 5, box, "neumann").shape == (20, 20)


def test_the_old_spacing_signature_and_bad_grids_are_refused_with_the_signature_named():
    with pytest.raises(TypeError, match="boundary"):
        stiffness_1d(24, 0.04, "dirichlet")  # the old (count, spacing, boundary)
    with pytest.raises(TypeError, match=r"take \(count, start, stop, boundary\)"):
        stiffness_1d(24, 0.0, "dirichlet", "dirichlet")
    with pytest.raises(TypeError, match=r"\(count_x, count_y, box, boundary\)"):
        grid_2d(4, 4, "dirichlet", "dirichlet")
    with pytest.raises(ValueError, match="start < stop"):
        uniform_nodes(4, 1.0, 0.0, "neumann")
    with pytest.raises(ValueError, match="boundary must be one of"):
        grid_spacing(4, 0.0, 1.0, "robin")
    with pytest.raises(ValueError, match="count must be an integer >= 2"):
        trapezoid_weights(4.0, 0.0, 1.0)
