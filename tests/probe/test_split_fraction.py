"""The stratified label-fraction sampler shared with finetune --label-fraction."""

from collections import Counter

import pytest

from dspt_geo.data.labels import stratified_fraction


def test_stratified_per_class_at_least_one() -> None:
    labels = [0] * 200 + [1] * 30 + [2] * 1
    kept = stratified_fraction(labels, 0.1, seed=0)
    assert Counter(labels[i] for i in kept) == {0: 20, 1: 3, 2: 1}
    tiny = stratified_fraction(labels, 0.001, seed=0)
    assert Counter(labels[i] for i in tiny) == {0: 1, 1: 1, 2: 1}
    assert stratified_fraction(labels, 1.0, seed=3) == list(range(len(labels)))


def test_seeded_nested_and_seed_dependent() -> None:
    labels = [i % 5 for i in range(500)]
    small = stratified_fraction(labels, 0.05, seed=1)
    large = stratified_fraction(labels, 0.2, seed=1)
    assert small == sorted(small)
    assert set(small) <= set(large)
    assert stratified_fraction(labels, 0.05, seed=1) == small
    assert stratified_fraction(labels, 0.05, seed=2) != small


@pytest.mark.parametrize('fraction', [0.0, -0.1, 1.5])
def test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError, match='label fraction'):
        stratified_fraction([0, 1], fraction)
