import math

import pytest
import torch

from clzoo.knn import knn_accuracy, knn_classify


def test_weighted_vote_matches_hand_computation():
    # Bank on the unit circle; labels 0,0,1. Query at angle 0.
    angles = torch.tensor([0.1, 0.5, 0.2])
    bank = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 0.0]])
    T = 0.5
    scores = knn_classify(bank, labels, query, k=2, temperature=T, num_classes=2)
    # the two nearest are angles 0.1 (label 0) and 0.2 (label 1)
    expected = torch.tensor([[math.exp(math.cos(0.1) / T), math.exp(math.cos(0.2) / T)]])
    torch.testing.assert_close(scores, expected)
    # with k=3 the 0.5 neighbour adds to class 0
    scores3 = knn_classify(bank, labels, query, k=3, temperature=T, num_classes=2)
    torch.testing.assert_close(scores3[0, 0], expected[0, 0] + math.exp(math.cos(0.5) / T))


def test_features_are_normalised_and_k_clipped():
    bank = torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[0.0, 5.0]])
    scores = knn_classify(bank, labels, query, k=50, temperature=1.0)
    assert scores.argmax().item() == 1
    torch.testing.assert_close(scores, torch.tensor([[math.exp(0.0), math.exp(1.0)]]))


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    bank, test = torch.randn(500, 16, generator=g), torch.randn(77, 16, generator=g)
    labels = torch.randint(0, 7, (500,), generator=g)
    full = knn_classify(bank, labels, test, k=20, chunk_size=10_000, bank_chunk_size=10_000)
    chunked = knn_classify(bank, labels, test, k=20, chunk_size=8, bank_chunk_size=33)
    torch.testing.assert_close(full, chunked)


def test_accuracy_and_errors():
    bank = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    assert knn_accuracy(bank, labels, bank, labels, k=1) == 1.0
    with pytest.raises(ValueError, match="rows"):
        knn_classify(bank, labels[:2], bank)
    with pytest.raises(ValueError, match="feature sizes"):
        knn_classify(bank, labels, torch.zeros(1, 4))
