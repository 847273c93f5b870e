"""IDX reading, the in-memory loader's order and shards, and MNIST/digits loading."""

from __future__ import annotations

import gzip

import pytest
import torch

from tests.helpers import make_fake_mnist
from trainer.data.idx import read_idx, write_idx
from trainer.data.memory import InMemoryLoader, TensorSplit, epoch_permutation, eval_batches
from trainer.errors import UserError
from trainer_recipes.mnist.data import DigitsData, MNISTData


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    data = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / name, data)
    assert torch.equal(read_idx(tmp_path / name), data)


def test_idx_bad_magic_is_named(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(UserError, match="bad magic number 504b0304"):
        read_idx(path)


def test_idx_truncated_is_named(tmp_path):
    path = tmp_path / "t-idx3-ubyte.gz"
    write_idx(path, torch.zeros(10, 28, 28, dtype=torch.uint8))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-50]))
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_broken_gzip_is_named(tmp_path):
    path = tmp_path / "t-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="cannot read"):
        read_idx(path)


def test_mnist_reads_gz_and_raw_files(tmp_path):
    folder = make_fake_mnist(tmp_path / "mnist", n_train=50, n_test=20)
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in folder.iterdir():
        (raw / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    a, b = MNISTData(str(folder), download=False), MNISTData(str(raw), download=False)
    assert a.train.inputs.dtype == torch.uint8 and a.train.inputs.shape == (50, 28, 28)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(
        a.test.targets, b.test.targets
    )


def test_mnist_missing_files_say_where_to_put_which(tmp_path):
    with pytest.raises(UserError) as info:
        MNISTData(str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "\n" not in message
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in message


def test_mnist_labels_that_do_not_match_images(tmp_path):
    folder = make_fake_mnist(tmp_path / "m", n_train=50, n_test=20)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.zeros(49, dtype=torch.uint8))
    with pytest.raises(UserError, match="do not belong together"):
        MNISTData(str(folder), download=False)


def test_mnist_wrong_image_size(tmp_path):
    folder = make_fake_mnist(tmp_path / "m", n_train=50, n_test=20)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", torch.zeros(20, 32, 32, dtype=torch.uint8))
    with pytest.raises(UserError, match="expected N x 28 x 28"):
        MNISTData(str(folder), download=False)


def test_digits_is_the_bundled_sklearn_set():
    data = DigitsData()
    assert len(data.train) + len(data.test) == 1797
    assert data.train.inputs.shape[1:] == (8, 8) and int(data.train.inputs.max()) == 16
    assert "NOT MNIST" in data.description


def _split(n: int) -> TensorSplit:
    return TensorSplit(torch.arange(n), torch.arange(n))


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_permutation(100, 3, 5), epoch_permutation(100, 3, 5))
    assert not torch.equal(epoch_permutation(100, 3, 5), epoch_permutation(100, 3, 6))
    assert not torch.equal(epoch_permutation(100, 3, 5), epoch_permutation(100, 4, 5))
    assert sorted(epoch_permutation(100, 0, 0).tolist()) == list(range(100))


def test_shards_are_disjoint_cover_the_epoch_and_match_one_worker():
    split, world = _split(103), 3
    one = [x for x, _ in InMemoryLoader(split, 12, seed=1).epoch(2)]
    shards = [
        [x for x, _ in InMemoryLoader(split, 12, seed=1, rank=r, world_size=world).epoch(2)]
        for r in range(world)
    ]
    assert all(len(s) == len(one) == 103 // 12 for s in shards)
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(set(seen.tolist())) == len(seen) == 8 * 12  # disjoint; last partial batch dropped
    for i, batch in enumerate(one):  # global batch i == the ranks' slices of it, in rank order
        assert torch.equal(batch, torch.cat([s[i] for s in shards]))


def test_the_rows_an_epoch_leaves_out_are_said():
    assert InMemoryLoader(_split(50), 8, seed=0).left_out().startswith(
        "50 training rows at global batch 8: the last 2 of each epoch's order are left out")
    assert InMemoryLoader(_split(48), 8, seed=0).left_out() == ""


def test_resume_mid_epoch_yields_the_remaining_batches():
    loader = InMemoryLoader(_split(50), 8, seed=0)
    full = [x for x, _ in loader.epoch(1)]
    tail = [x for x, _ in loader.epoch(1, start=4)]
    assert len(tail) == 2 and all(torch.equal(a, b) for a, b in zip(full[4:], tail, strict=True))


def _resized_epoch(loader: InMemoryLoader, sizes: dict[int, int], epoch: int = 2,
                   offset: int = 0) -> list[torch.Tensor]:
    """The epoch's batches, the global batch changed to ``sizes[i]`` after batch i."""
    out = []
    for i, (x, _) in enumerate(loader.epoch(epoch, offset=offset)):
        out.append(x)
        if i in sizes:
            loader.resize(sizes[i])
    return out


def test_a_batch_changed_inside_an_epoch_skips_and_repeats_no_sample_on_any_number_of_workers():
    """The position is a sample offset: after a resize the epoch goes on with the next samples
    of its order at the new size (the adaptive batch size changes it mid-epoch), and N workers
    still see exactly one worker's global batches."""
    split, sizes = _split(103), {2: 24, 4: 6}
    one = _resized_epoch(InMemoryLoader(split, 12, seed=1), sizes)
    assert [len(x) for x in one] == [12, 12, 12, 24, 24, 6, 6, 6]  # 1 row left out
    order = epoch_permutation(103, 1, 2)
    assert torch.equal(torch.cat(one), order[:len(torch.cat(one))])  # in order, none twice
    shards = [_resized_epoch(InMemoryLoader(split, 12, seed=1, rank=r, world_size=2), sizes)
              for r in range(2)]
    for i, batch in enumerate(one):
        assert torch.equal(batch, torch.cat([s[i] for s in shards]))
    # A resume at the sample offset of batch 4 (60) continues identically.
    loader = InMemoryLoader(split, 24, seed=1)
    tail = _resized_epoch(loader, {0: 6}, offset=60)
    assert all(torch.equal(a, b) for a, b in zip(one[4:], tail, strict=True))
    assert loader.epoch_done(60 + sum(len(x) for x in tail))


def test_batch_must_split_over_workers_and_fit_the_data():
    with pytest.raises(ValueError, match="does not split over 4 workers"):
        InMemoryLoader(_split(100), 10, seed=0, world_size=4)
    with pytest.raises(ValueError, match="larger than the 100"):
        InMemoryLoader(_split(100), 101, seed=0)


def test_eval_shards_cover_every_sample_once():
    split = _split(101)
    seen = [x for r in range(3) for x, _ in eval_batches(split, 16, rank=r, world_size=3)]
    assert torch.equal(torch.cat(seen), torch.arange(101))
