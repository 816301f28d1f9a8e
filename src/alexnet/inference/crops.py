"""Test-time views: which crops of an image a network sees when it is evaluated, as a table.

Each entry maps (full side, crop side) to (top, left, mirrored) positions. The paper's
10-crop testing (section 4.1): "the network makes a prediction by extracting five 224x224
patches (the four corner patches and the center patch) as well as their horizontal
reflections (hence ten patches in all), and averaging the predictions made by the network's
softmax layer on the ten patches" (227 here, the size the network's arithmetic needs).
"""

from __future__ import annotations

from collections.abc import Callable

View = tuple[int, int, bool]  # top, left, mirrored


def centre(full: int, size: int) -> list[View]:
    c = (full - size) // 2
    return [(c, c, False)]


def centre_and_mirror(full: int, size: int) -> list[View]:
    c = (full - size) // 2
    return [(c, c, False), (c, c, True)]


def ten(full: int, size: int) -> list[View]:
    """The four corners and the centre, then the same five mirrored."""
    far, c = full - size, (full - size) // 2
    five = [(0, 0), (0, far), (far, 0), (far, far), (c, c)]
    return [(y, x, mirrored) for mirrored in (False, True) for y, x in five]


CROPS: dict[int, Callable[[int, int], list[View]]] = {1: centre, 2: centre_and_mirror, 10: ten}
