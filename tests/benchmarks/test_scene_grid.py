"""benchmarks/scene_grid.py: a cell counts the pictures read with every attribute as asked."""

from benchmarks.scene_grid import cell

SCENE = {"shape": "triangle", "colour": "green", "pattern": "striped", "size": "small", "background": "navy"}


def test_a_cell_counts_pictures_right_in_every_attribute_and_names_the_commonest_misses():
    reads = [dict(SCENE), {**SCENE, "shape": "blob"}, {**SCENE, "shape": "blob", "colour": "purple"},
             {**SCENE, "size": "big"}]
    assert cell(SCENE, reads) == "1 of 4 (blob 2, purple 1)"
    assert cell(SCENE, [dict(SCENE)]) == "1 of 1"
