"""Part 1 data: palindromes, labels, split without overlap, one-hot, seeding."""
import pytest
import torch

from dataset import PalindromeDataset, capped_size


@pytest.mark.parametrize("input_length", [1, 4, 9, 20, 99])
def test_samples_are_palindromes_with_first_digit_label(input_length):
    ds = PalindromeDataset(input_length, 500)
    full = ds.palindromes
    assert full.shape == (len(ds), input_length + 1)
    assert torch.equal(full, full.flip(1))
    x, y = ds.batch(torch.arange(len(ds)))
    assert x.shape == (len(ds), input_length, 1)
    assert torch.equal(y, x[:, 0, 0].long())  # the last digit of a palindrome is its first
    assert torch.equal(x[:, :, 0].long(), full[:, :-1])


def test_distinct_and_split_without_overlap():
    ds = PalindromeDataset(19, 5000)
    assert len(torch.unique(ds.palindromes, dim=0)) == len(ds)
    train_idx, val_idx = ds.split(0.8)
    assert len(train_idx) == 4000 and len(val_idx) == 1000
    train = {tuple(r) for r in ds.palindromes[train_idx].tolist()}
    val = {tuple(r) for r in ds.palindromes[val_idx].tolist()}
    assert not train & val


def test_one_hot_inputs():
    ds = PalindromeDataset(7, 100, one_hot=True)
    x, y = ds[3]
    assert x.shape == (7, 10) and ds.input_dim == 10
    assert torch.equal(x.sum(1), torch.ones(7))
    assert x[0].argmax().item() == y


def test_seeded_and_capped(capsys):
    assert torch.equal(PalindromeDataset(9, 300, seed=3).palindromes, PalindromeDataset(9, 300, seed=3).palindromes)
    assert not torch.equal(PalindromeDataset(9, 300, seed=3).palindromes, PalindromeDataset(9, 300, seed=4).palindromes)
    small = PalindromeDataset(3, 1000)  # length 4: only 100 distinct
    assert len(small) == 100 == len(torch.unique(small.palindromes, dim=0))
    assert "warning" in capsys.readouterr().err


def test_capped_size_is_quick_for_long_sequences():
    assert capped_size(3, 1000) == 100 == PalindromeDataset.max_distinct(3)  # length 4: 10**2 first halves
    assert capped_size(9, 100_000) == 100_000 and capped_size(9, 100_001) == 100_000
    assert capped_size(100_000_000, 100_000) == 100_000  # 10**50_000_000 is never built
