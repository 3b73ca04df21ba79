"""One training step, written out for tests/test_ddp.py: `torchrun --nproc-per-node 2 tests/ddp_step.py <train.main
flags> OUT_DIR` (each rank writes OUT_DIR/rank<r>.pt), or plain `python tests/ddp_step.py ...` for one process.

Saves the gradients after the step's backward pass (all-reduced by DDP under torchrun), the updated weights and
the step's token NLL.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from train import distributed
from train import main as train_main
from train.data import load_data
from train.engine import train_step


def main() -> None:
    args = train_main.build_parser().parse_args(sys.argv[1:-1])
    out = Path(sys.argv[-1])
    torch.set_num_threads(1)
    device = distributed.setup(torch.device("cpu"))
    voc, pairs, _ = load_data(args)
    run = train_main.new_run(args, voc, device)
    batch, _ = next(train_main.numbered_batches(run, pairs, args, device))
    nll = train_step(run.encoder, run.decoder, run.optimizers, batch, args.clip, True,
                     objective_module=run.objective)
    # after backward: all-reduced by DDP under torchrun; the step leaves them in place (clip is set out of reach)
    grads = {f"{part}.{name}": p.grad.clone() for part, module in (("encoder", run.encoder), ("decoder", run.decoder))
             for name, p in module.named_parameters()}
    torch.save({"grads": grads, "encoder": run.encoder.state_dict(), "decoder": run.decoder.state_dict(),
                "nll": float(distributed.all_reduce_sum(nll))}, out / f"rank{distributed.world()[0]}.pt")
    distributed.teardown()


if __name__ == "__main__":
    main()
