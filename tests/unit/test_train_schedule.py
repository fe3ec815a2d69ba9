"""The training schedule and the distributed pieces that run without torchrun: global batches shared out among
processes, epochs, keyed random draws, BatchNorm over the global batch, the torchrun environment."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from comfyui_layer_sketch.common.training import batch_norm, distributed
from comfyui_layer_sketch.common.training.schedule import BatchSchedule
from comfyui_layer_sketch.sketch_guidance.train import TrainConfig, train_predictor


@pytest.mark.parametrize(("batch", "processes"), [(4, 1), (4, 2), (5, 2), (16, 3), (3, 3)])
def test_the_processes_shares_make_up_each_global_batch_once(batch, processes):
    schedule = BatchSchedule(7, batch, seed=1)
    for step in range(5):
        shares = [schedule.share(step, rank, processes) for rank in range(processes)]
        assert sorted(position for share in shares for position, _ in share) == list(range(batch))
        by_position = dict(pair for share in shares for pair in share)
        assert [by_position[p] for p in range(batch)] == schedule.images(step)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_each_epoch_reads_every_image_once_in_a_seeded_order():
    schedule = BatchSchedule(5, 2, seed=3)
    stream = [image for step in range(10) for image in schedule.images(step)]  # 4 epochs, batches across epochs
    epochs = [stream[i:i + 5] for i in range(0, 20, 5)]
    assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1, "a new order each epoch"
    assert stream == [image for step in range(10) for image in BatchSchedule(5, 2, seed=3).images(step)]
    assert stream != [image for step in range(10) for image in BatchSchedule(5, 2, seed=4).images(step)]


def test_random_draws_are_keyed_by_step_and_position_not_by_what_came_before():
    schedule = BatchSchedule(5, 4, seed=0)
    first = torch.rand(3, generator=schedule.generator(2, 1))
    torch.rand(3, generator=schedule.generator(0, 0))  # other draws in between change nothing
    assert torch.equal(first, torch.rand(3, generator=BatchSchedule(5, 4, seed=0).generator(2, 1)))
    others = [schedule.generator(2, 2), schedule.generator(3, 1), BatchSchedule(5, 4, seed=1).generator(2, 1)]
    assert all(not torch.equal(first, torch.rand(3, generator=g)) for g in others)


@pytest.fixture(params=["torchrun, 1 process", "no process group"])
def one_process(request):
    """One process, in a process group (a run under torchrun) or in none (training without torchrun)."""
    if request.param == "no process group":
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_global_batch_norm_of_one_process_is_batch_norm(one_process):
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    converted = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    converted.load_state_dict(plain.state_dict())
    batch_norm.use_global_batch_norm(converted)
    assert isinstance(converted[1], batch_norm.GlobalBatchNorm1d)
    assert converted.state_dict().keys() == plain.state_dict().keys()
    rows = torch.randn(40, 6) * 3 + 1
    for model in (plain, converted):
        model(rows).square().mean().backward()
    for (name, expected), actual in zip(plain.state_dict().items(), converted.state_dict().values(), strict=True):
        torch.testing.assert_close(actual, expected, msg=name)
    for expected, actual in zip(plain.parameters(), converted.parameters(), strict=True):
        torch.testing.assert_close(actual.grad, expected.grad)
    plain.eval(), converted.eval()
    torch.testing.assert_close(converted(rows), plain(rows))


def test_the_torchrun_environment_names_this_process():
    assert distributed.from_environment({}) == distributed.SINGLE
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    processes = distributed.from_environment(env)
    assert (processes.rank, processes.world_size, processes.local_rank, processes.local_world_size) == (3, 4, 1, 2)
    assert processes.launched and not processes.is_main


def test_cpu_threads_share_the_cores_unless_the_user_chose():
    two_per_machine = distributed.Processes(0, 2, 0, 2, True)
    cores = distributed.cpu_threads(distributed.Processes(0, 1, 0, 1, True), {})
    assert distributed.cpu_threads(two_per_machine, {}) == max(1, cores // 2)
    assert distributed.cpu_threads(two_per_machine, {"OMP_NUM_THREADS": "1"}) == max(1, cores // 2), \
        "torchrun's own default"
    assert distributed.cpu_threads(two_per_machine, {"OMP_NUM_THREADS": "3"}) == 3


def test_a_batch_smaller_than_the_process_count_is_refused():
    four = distributed.Processes(0, 4, 0, 4, True)
    with pytest.raises(ValueError, match="at least 4 images"):
        train_predictor(None, None, TrainConfig(batch_size=2), "unused.safetensors", processes=four)
