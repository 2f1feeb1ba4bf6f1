#!/usr/bin/python3
"""The training step of fedseg-train in Python PyTorch, for bench/train.sh.

Same network (share/fedseg/python/fedseg_model.py), same loss (BraTS region Dice,
smooth 1), same optimiser (Adam, the plan's learning rate), same gradient clipping,
batch 1, same thread count. Inputs are random patches already in memory: this times
the step only. Prints one JSON line: first step and median of the others, seconds.

usage: train_reference.py PRESET PATCH THREADS STEPS
"""
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, sys.path[0] + "/../share/fedseg/python")
import fedseg_model  # noqa: E402

preset, patch, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
arch = {"name": "resunet3d", "in_channels": 4, "out_channels": 3, "dropout": 0.3, "negative_slope": 0.01,
        "regions": ["ET", "TC", "WT"], "channels": ["t1", "t1ce", "t2", "flair"],
        "base_filters": 30, "depth": 4}
if preset == "small":
    arch.update(base_filters=8, depth=3, dropout=0.1)
torch.manual_seed(0)
model = fedseg_model.ResUNet(arch)
model.train()
opt = torch.optim.Adam(model.parameters(), lr=5e-5, foreach=False)
x = torch.randn(1, 4, patch, patch, patch)
y = (torch.rand(1, 3, patch, patch, patch) < 0.1).float()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    logits = model(x)
    p = torch.sigmoid(logits)
    inter = (p * y).sum((0, 2, 3, 4))
    denom = p.sum((0, 2, 3, 4)) + y.sum((0, 2, 3, 4))
    loss = 1 - ((2 * inter + 1) / (denom + 1)).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
    opt.step()
    float(loss)
    times.append(time.perf_counter() - t0)
print(json.dumps({"first_step_seconds": times[0],
                  "median_step_seconds": statistics.median(times[1:]) if len(times) > 1 else times[0],
                  "parameters": sum(p.numel() for p in model.parameters())}))
