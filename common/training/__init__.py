"""The skeleton every trainer of the pack shares (plain torch; the edge predictor's is sketch_guidance/train.py).

A trainer brings its model, optimiser, dataset and what one step computes; from here it takes the rest:

    processes = distributed.from_environment()          # rank 0 of 1 without torchrun
    # command line, under torchrun: distributed.join(processes, cpu, host_device) and
    # fingerprint.require_same_data(dataset contents, processes, ...) before loading models
    loop.check_run(steps, batch_size, save_every, processes)
    schedule = BatchSchedule(len(dataset), batch_size, seed)   # the run's batches and random draws
    run = loop.Loop(steps, save_every, state.path_for(output),
                    fingerprint.run_fingerprint(dataset_fingerprint, config, model_info),
                    {"model": model, "optimizer": optimizer}, processes)
    run.resume()                                        # restores the parts from a saved state of this run
    wrapped = distributed.data_parallel(model, processes, device)
    report = run.run(step, on_step)                     # step(i): share = schedule.share(i, rank, world_size),
                                                        # forward/backward/optimiser step, the global loss
    if processes.is_main: save the model                # rank 0 alone writes files

`step` computes its process's share of global batch i with the draws of schedule.generator(i, position), and
scales its loss so that DistributedDataParallel's average of the gradients is the global batch's; BatchNorm
layers go through batch_norm.use_global_batch_norm so their statistics are the global batch's too. Then the
result and the saved state do not depend on the process count, and a run resumes with any number of
processes. Progress: a callback (steps done, steps, loss) that a node maps to the host's progress bar, or
command.progress_bar (tqdm on rank 0); command.exits_on_failure turns a stopped process into its message.
"""

from . import batch_norm, command, distributed, fingerprint, loop, schedule, state
from .schedule import BatchSchedule

__all__ = ["BatchSchedule", "batch_norm", "command", "distributed", "fingerprint", "loop", "schedule", "state"]
