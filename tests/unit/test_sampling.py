from collections import Counter

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader, Dataset

from ups.data.sampling import TaskBatchSampler

# (task_sizes, batch_size, world_size, batches per rank)
COMBOS = [
    ([10], 4, 1, 3),  # 4 4 2
    ([7, 3], 4, 2, 2),  # 3 batches, one split -> 4
    ([9, 5, 1], 4, 2, 3),  # 3 + 2 + 1 = 6
    ([5], 2, 3, 1),  # 2 2 1
    ([33, 17, 8], 8, 4, 3),  # 5 + 3 + 1 = 9, three splits -> 12
    ([0, 6, 2], 3, 4, 1),  # empty task gives no batch; 2 + 1, one split -> 4
]


class IndexDataset(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _ranks(sizes, batch_size, world_size, epoch=0, **kw) -> list[list[list[int]]]:
    """Batches of every rank at ``epoch``: ``[world_size][len][<= batch_size]``."""
    out = []
    for rank in range(world_size):
        s = TaskBatchSampler(sizes, batch_size, rank=rank, world_size=world_size, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def _task_of(i: int, sizes) -> int:
    offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    return next(k for k in range(len(sizes)) if offsets[k] <= i < offsets[k + 1])


@pytest.mark.parametrize("strategy", ["proportional", "uniform"])
@pytest.mark.parametrize("sizes,batch_size,world_size,per_rank", COMBOS)
def test_batches_hold_one_task_and_at_most_batch_size(sizes, batch_size, world_size, per_rank, strategy):
    for rank_batches in _ranks(sizes, batch_size, world_size, epoch=1, strategy=strategy):
        for batch in rank_batches:
            assert 1 <= len(batch) <= batch_size
            assert len({_task_of(i, sizes) for i in batch}) == 1


@pytest.mark.parametrize("sizes,batch_size,world_size,per_rank", COMBOS)
def test_proportional_ranks_partition_every_epoch(sizes, batch_size, world_size, per_rank):
    for epoch in range(3):
        ranks = _ranks(sizes, batch_size, world_size, epoch=epoch)
        items = [[i for batch in rank_batches for i in batch] for rank_batches in ranks]
        assert sorted(i for rank_items in items for i in rank_items) == list(range(sum(sizes)))
        assert [len(rank_batches) for rank_batches in ranks] == [per_rank] * world_size


@pytest.mark.parametrize("sizes,batch_size,world_size,per_rank", COMBOS)
def test_len_is_known_before_drawing(sizes, batch_size, world_size, per_rank):
    for rank in range(world_size):
        s = TaskBatchSampler(sizes, batch_size, rank=rank, world_size=world_size)
        assert len(s) == per_rank
        assert len(s.epoch_batches(5)) == per_rank * world_size


def test_same_seed_and_epoch_give_same_batches_and_epochs_differ():
    a = TaskBatchSampler([33, 17, 8], 4, seed=7)
    b = TaskBatchSampler([33, 17, 8], 4, seed=7)
    assert a.epoch_batches(2) == b.epoch_batches(2)
    assert a.epoch_batches(2) != a.epoch_batches(3)
    assert a.epoch_batches(2) != TaskBatchSampler([33, 17, 8], 4, seed=8).epoch_batches(2)


def test_shuffled_epoch_interleaves_tasks_in_proportion():
    tasks = [_task_of(b[0], [33, 17, 8]) for b in TaskBatchSampler([33, 17, 8], 4, seed=0).epoch_batches(0)]
    assert Counter(tasks) == {0: 9, 1: 5, 2: 2}
    assert tasks != sorted(tasks)


def test_no_shuffle_gives_consecutive_batches_and_halves_the_first_largest():
    s = TaskBatchSampler([7, 3], 4, shuffle=False)
    assert s.epoch_batches(0) == s.epoch_batches(9) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert _ranks([7, 3], 4, 2, epoch=4, shuffle=False) == [[[0, 1], [4, 5, 6]], [[2, 3], [7, 8, 9]]]


def test_lightning_set_sampler_epoch_reaches_the_sampler():
    s = TaskBatchSampler([9, 5, 1], 2, seed=3)
    _set_sampler_epoch(DataLoader(IndexDataset(15), batch_sampler=s), 3)
    assert s.epoch == 3
    assert list(s) == s.epoch_batches(3) != s.epoch_batches(0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_yields_each_ranks_items(num_workers):
    for rank in range(4):
        s = TaskBatchSampler([33, 17, 8], 8, seed=1, rank=rank, world_size=4)
        s.set_epoch(2)
        loader = DataLoader(IndexDataset(58), batch_sampler=s, num_workers=num_workers)
        assert [batch.tolist() for batch in loader] == s.epoch_batches(2)[rank::4]


@pytest.mark.parametrize("sizes,batch_size,world_size,per_rank", COMBOS)
def test_uniform_draws_every_task_equally_and_every_item(sizes, batch_size, world_size, per_rank):
    ranks = _ranks(sizes, batch_size, world_size, epoch=1, strategy="uniform")
    draws = Counter(i for rank_batches in ranks for batch in rank_batches for i in batch)
    most = max(sizes)
    assert sum(draws.values()) == most * sum(1 for size in sizes if size)
    assert Counter(_task_of(i, sizes) for i in draws.elements()) == {
        k: most for k, n in enumerate(sizes) if n
    }
    for i in range(sum(sizes)):
        size = sizes[_task_of(i, sizes)]
        assert most // size <= draws[i] <= -(-most // size)
    assert len({len(rank_batches) for rank_batches in ranks}) == 1


def test_uniform_len():
    # each of 3 tasks draws 9 -> 3 batches of <= 4 each, 9 batches, one split -> 5 per rank
    assert len(TaskBatchSampler([9, 5, 1], 4, strategy="uniform", world_size=2)) == 5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(task_sizes=[2], batch_size=1, world_size=3), "2 draws per epoch.*3 ranks.*fewer devices"),
        (dict(task_sizes=[5], batch_size=1, world_size=4), "5 draws per epoch.*needs 8"),
        (dict(task_sizes=[5], batch_size=0), "batch_size=0"),
        (dict(task_sizes=[5], batch_size=2, rank=2, world_size=2), "rank=2, world_size=2"),
        (dict(task_sizes=[5], batch_size=2, rank=-1), "rank=-1"),
        (dict(task_sizes=[5], batch_size=2, strategy="balanced"), "unknown sampling strategy 'balanced'"),
        (dict(task_sizes=[], batch_size=2), "at least one task"),
        (dict(task_sizes=[0, 0], batch_size=2), "at least one task"),
        (dict(task_sizes=[4, -1], batch_size=2), "no negative"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskBatchSampler(**kwargs)


def test_weights_multiply_a_tasks_draws_and_keep_the_shards_equal():
    sampler = TaskBatchSampler([20, 3], 4, weights=[1.0, 4.0], world_size=2, seed=1)
    counts = {0: 0, 1: 0}
    per_rank = []
    for rank in (0, 1):
        shard = TaskBatchSampler([20, 3], 4, weights=[1.0, 4.0], world_size=2, rank=rank, seed=1)
        batches = list(shard)
        per_rank.append(len(batches))
        for batch in batches:
            counts[0 if batch[0] < 20 else 1] += len(batch)
    assert counts == {0: 20, 1: 12} and per_rank == [len(sampler)] * 2
    small = [i for batch in sampler.epoch_batches(0) for i in batch if i >= 20]
    assert sorted(set(small)) == [20, 21, 22] and all(small.count(i) == 4 for i in (20, 21, 22))
    with pytest.raises(ValueError, match="one positive weight per task"):
        TaskBatchSampler([20, 3], 4, weights=[1.0, 0.0])


def test_validation_limit_keeps_a_fixed_subset_shared_by_task_size():
    s = TaskBatchSampler([60, 30, 10], 8, shuffle=False, seed=5, limit=20)
    batches = s.epoch_batches(0)
    items = [i for b in batches for i in b]
    assert s.epoch_batches(7) == batches  # the same subset at every validation
    assert len(items) == len(set(items)) == 20
    assert Counter(_task_of(i, [60, 30, 10]) for i in items) == {0: 12, 1: 6, 2: 2}
    assert all(_task_of(b[0], [60, 30, 10]) == _task_of(b[-1], [60, 30, 10]) for b in batches)
    assert items == sorted(items)  # tasks in order, items in order
    other = TaskBatchSampler([60, 30, 10], 8, shuffle=False, seed=6, limit=20)
    assert [i for b in other.epoch_batches(0) for i in b] != items  # drawn from the seed
    assert len(s) == 2 + 1 + 1
    # a limit above the split keeps all of it; a tiny task keeps one item
    assert TaskBatchSampler([7, 3], 4, shuffle=False, limit=50).epoch_batches(0) == [
        [0, 1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
    ]
    assert Counter(
        _task_of(i, [99, 1])
        for b in TaskBatchSampler([99, 1], 4, shuffle=False, limit=5).epoch_batches(0)
        for i in b
    ) == {0: 4, 1: 1}
    with pytest.raises(ValueError, match="for validation"):
        TaskBatchSampler([7, 3], 4, shuffle=True, limit=5)
