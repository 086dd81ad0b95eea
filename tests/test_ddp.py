"""Data-parallel fine-tuning and evaluation: two gloo processes on CPU equal one process."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cimconvert import convert, crossbar_layers, finetune, get_policy
from cimconvert.data import digits_split
from cimconvert.distributed import evaluate_sharded
from cimconvert.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")

POLICY = get_policy(
    "slc2mlc3", program_noise=0.05, read_noise=0.05, adc_bits=8,
    # per-row input scales and fixed signedness: a row's codes do not depend on the rest of the batch
    input_granularity="row", input_signed="signed",
)
GLOBAL_BATCH = 32
SAMPLES = 256


def _setup() -> tuple[nn.Module, DataLoader, DataLoader]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    images, labels = digits_split("train")
    x = torch.tensor(images[:SAMPLES], dtype=torch.float32).view(-1, 64) / 255.0
    data = TensorDataset(x, torch.tensor(labels[:SAMPLES]))
    converted = convert(model, POLICY, example_inputs=x[:4], seed=3)
    train = DataLoader(data, batch_size=GLOBAL_BATCH, shuffle=True)
    test = DataLoader(TensorDataset(x[:101], data.tensors[1][:101]), batch_size=16)
    return converted, train, test


def _train(converted: nn.Module, train: DataLoader, test: DataLoader) -> dict[str, torch.Tensor]:
    history = finetune(converted, train, epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, seed=5,
                       progress=False)
    out = {name: p.detach().clone() for name, p in converted.named_parameters()}
    out["loss"] = torch.tensor(history["loss"])
    # per-read noise follows the batches, which differ between shards: evaluate a chip without it
    for layer in crossbar_layers(converted).values():
        layer.policy = layer.policy.replace(read_noise=0.0)
    metrics = evaluate_sharded(converted, test, device="cpu", progress=False)
    out["top1"] = torch.tensor(metrics["top1"])
    out["images"] = torch.tensor(metrics["images"])
    return out


def _worker(rank: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = _train(*_setup())
        if rank == 0:
            torch.save(result, path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    path = str(tmp_path / "ddp.pt")
    mp.start_processes(_worker, args=(_free_port(), path), nprocs=2, join=True, start_method="spawn")
    ddp = torch.load(path)
    single_model, train, test = _setup()
    single = _train(single_model, train, test)
    assert single["images"] == ddp["images"] == 101
    assert torch.equal(single["top1"], ddp["top1"])
    assert torch.allclose(single["loss"], ddp["loss"], rtol=1e-5)
    start = dict(_setup()[0].named_parameters())
    for name, p in single.items():
        if name in start:
            assert not torch.allclose(p, start[name])  # it did train
            assert (p - ddp[name]).abs().max() < 1e-6, name


def test_sharded_evaluation_alone_is_plain_evaluation():
    (a, _, test), (b, _, _) = _setup(), _setup()
    alone = evaluate_sharded(a, test, device="cpu", progress=False)
    assert alone == evaluate(b, test, device="cpu", progress=False)
