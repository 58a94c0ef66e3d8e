"""The DS-CNN extractor in PyTorch, its training on the CPU, and the export of its parameters.

The network is the one of docs/learning.md, section 2, before quantisation: ``conv0`` (3x3,
stride 2, pad 1, 1 -> 64) then four depthwise-separable blocks (depthwise 3x3 pad 1, stride 2
in ``ds1`` and 1 after, then pointwise 64 -> 64), each convolution followed by batch
normalisation and ReLU, then the average over the 13 x 10 positions: the 64-value embedding.
A linear classifier over the corpus words sits on top for training only.

Inputs are the int8 features of the spec dequantised (``q / 16``); training augments them in
the int8 domain as a board does (docs/learning.md, "Replay with augmentation"): a time shift of
up to 3 frames (vacated frames repeat the edge frame) and, for half the clips, noise in [-8, 7]
added to every value, saturated to int8.

:func:`export` folds each batch normalisation into the preceding convolution and returns the
float parameters under the keys of :data:`tinyfed.model.dscnn.extractor.PARAM_SHAPES` (the
contract with the int8 reference), with ``embed.mean`` / ``embed.sd`` measured on the clean
training clips. Reproducibility: everything is seeded (torch, the batch order, the
augmentation) and the thread count is set explicitly, so a run repeats bit for bit on the same
machine, PyTorch build and thread count; another CPU or thread count may round differently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from tinyfed.features import logmel
from tinyfed.model.dscnn.extractor import CHANNELS, N_BLOCKS, PARAM_SHAPES

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]

BN_EPS = 1e-5  #: PyTorch's BatchNorm2d default
SHIFT_FRAMES = 3  #: time shift range, frames (the board's copies 1 and 2: docs/learning.md)
NOISE_LO, NOISE_HI = -8, 7  #: int8 noise range (the board's copies 3 and 4: docs/learning.md)
NOISE_SHARE = 0.5  #: share of training clips given int8 noise in a batch
BATCH = 64  #: clips per step: small batches generalise better and run fast on 2 cores
LR = 3e-3  #: peak Adam learning rate, decayed by a cosine to 0 (a common DS-CNN setting)
WEIGHT_DECAY = 1e-4  #: AdamW decoupled weight decay
LABEL_SMOOTHING = 0.1  #: softer targets: a better embedding for words the classifier never saw
DROPOUT = 0.1  #: on the embedding, before the training-only classifier
EVAL_BATCH = 512  #: clips per forward pass when evaluating (memory only)


class DSCNN(nn.Module):
    """The extractor (docs/learning.md, section 2) plus a training-only linear classifier."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(CHANNELS, eps=BN_EPS)
        self.dw = nn.ModuleList()
        self.dw_bn = nn.ModuleList()
        self.pw = nn.ModuleList()
        self.pw_bn = nn.ModuleList()
        for i in range(1, N_BLOCKS + 1):
            stride = 2 if i == 1 else 1
            self.dw.append(
                nn.Conv2d(CHANNELS, CHANNELS, 3, stride, padding=1, groups=CHANNELS, bias=False)
            )
            self.dw_bn.append(nn.BatchNorm2d(CHANNELS, eps=BN_EPS))
            self.pw.append(nn.Conv2d(CHANNELS, CHANNELS, 1, bias=False))
            self.pw_bn.append(nn.BatchNorm2d(CHANNELS, eps=BN_EPS))
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(CHANNELS, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 50, 40]`` dequantised features -> the pooled embedding ``[n, 64]``."""
        h = torch.relu(self.bn0(self.conv0(x[:, None])))
        for dw, dw_bn, pw, pw_bn in zip(self.dw, self.dw_bn, self.pw, self.pw_bn, strict=True):
            h = torch.relu(dw_bn(dw(h)))
            h = torch.relu(pw_bn(pw(h)))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.dropout(self.embed(x)))
        return out


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, the seed, the threads."""

    epochs: int
    seed: int
    threads: int
    batch: int = BATCH
    lr: float = LR


@dataclass
class EpochStats:
    """One epoch: mean training loss, accuracies, seconds."""

    epoch: int
    loss: float
    train_accuracy: float
    validation_accuracy: float
    seconds: float


@dataclass
class Trained:
    """A trained network and its history."""

    model: DSCNN
    history: list[EpochStats] = field(default_factory=list)


def setup_torch(seed: int, threads: int) -> None:
    """Seed torch, fix its thread count, and ask for deterministic kernels."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def dequantise(q: torch.Tensor) -> torch.Tensor:
    """int8 features -> the network's float input ``q / 16`` (docs/learning.md, section 1)."""
    return q.to(torch.float32) / float(logmel.INPUT_SCALE_INV)


def augment(q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The board's augmentations, drawn at random: int8 ``[n, 50, 40]`` -> int8, same shape."""
    n, frames, _ = q.shape
    shift = torch.randint(-SHIFT_FRAMES, SHIFT_FRAMES + 1, (n, 1), generator=gen)
    idx = (torch.arange(frames)[None, :] + shift).clamp(0, frames - 1)  # edge frames repeat
    out = torch.gather(q.to(torch.int16), 1, idx[:, :, None].expand(-1, -1, q.shape[2]))
    noisy = torch.rand(n, generator=gen) < NOISE_SHARE
    noise = torch.randint(NOISE_LO, NOISE_HI + 1, q.shape, generator=gen, dtype=torch.int16)
    out = out + noise * noisy[:, None, None]
    return out.clamp(-128, 127).to(torch.int8)


@torch.no_grad()
def predict(model: DSCNN, x: I8) -> I64:
    """Class indices for int8 features ``[n, 50, 40]`` (eval mode)."""
    model.eval()
    preds = [
        model(dequantise(torch.from_numpy(x[i : i + EVAL_BATCH]))).argmax(1).numpy()
        for i in range(0, len(x), EVAL_BATCH)
    ]
    out: I64 = np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)
    return out


@torch.no_grad()
def embeddings(model: DSCNN, x: I8) -> F32:
    """Pooled float embeddings ``[n, 64]`` of int8 features (eval mode)."""
    model.eval()
    parts = [
        model.embed(dequantise(torch.from_numpy(x[i : i + EVAL_BATCH]))).numpy()
        for i in range(0, len(x), EVAL_BATCH)
    ]
    out: F32 = np.concatenate(parts).astype(np.float32)
    return out


def accuracy(pred: I64, y: I64) -> float:
    """Share of correct predictions (``nan`` for no clips)."""
    return float(np.mean(pred == y)) if len(y) else math.nan


def train(
    x_train: I8,
    y_train: I64,
    x_val: I8,
    y_val: I64,
    *,
    n_classes: int,
    config: TrainConfig,
    log: Callable[[EpochStats], None] | None = None,
) -> Trained:
    """Train the network on int8 features; ``log`` is called after every epoch."""
    setup_torch(config.seed, config.threads)
    gen = torch.Generator().manual_seed(config.seed)
    model = DSCNN(n_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = max(1, math.ceil(len(x_train) / config.batch))
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    result = Trained(model)
    for epoch in range(1, config.epochs + 1):
        start = time.monotonic()
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(order), config.batch):
            idx = order[i : i + config.batch]
            xb, yb = dequantise(augment(xt[idx], gen)), yt[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        stats = EpochStats(
            epoch=epoch,
            loss=loss_sum / max(1, len(xt)),
            train_accuracy=correct / max(1, len(xt)),
            validation_accuracy=accuracy(predict(model, x_val), y_val),
            seconds=time.monotonic() - start,
        )
        result.history.append(stats)
        if log is not None:
            log(stats)
    model.eval()
    return result


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[F32, F32]:
    """Batch norm folded into a bias-free convolution: weights ``[out, ...]`` and bias."""
    assert isinstance(conv, nn.Conv2d)
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.running_mean is not None
    assert bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * scale[:, None, None, None]
    b = bn.bias.detach() - bn.running_mean * scale
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32)


def export(model: DSCNN, x_train: I8) -> dict[str, F32]:
    """The float parameters (batch norm folded) with the embedding's mean and sd.

    ``embed.mean`` / ``embed.sd`` are the per-channel mean and (population) standard deviation
    of the pooled embedding over the clean training clips ``x_train``; an sd below 1e-6 (a
    channel that never fires) is raised to 1e-6 so the standardisation stays finite.
    """
    model.eval()
    params: dict[str, F32] = {}
    w, b = _fold(model.conv0, model.bn0)
    params["conv0.w"], params["conv0.b"] = w[:, 0], b
    for i in range(N_BLOCKS):
        w, b = _fold(model.dw[i], model.dw_bn[i])
        params[f"ds{i + 1}.dw.w"], params[f"ds{i + 1}.dw.b"] = w[:, 0], b
        w, b = _fold(model.pw[i], model.pw_bn[i])
        params[f"ds{i + 1}.pw.w"], params[f"ds{i + 1}.pw.b"] = w[:, :, 0, 0], b
    emb = embeddings(model, x_train).astype(np.float64)
    params["embed.mean"] = emb.mean(axis=0).astype(np.float32)
    params["embed.sd"] = np.maximum(emb.std(axis=0), 1e-6).astype(np.float32)
    assert {k: v.shape for k, v in params.items()} == PARAM_SHAPES
    return params


def classifier_logits(model: DSCNN, pooled: npt.NDArray[np.floating]) -> F32:
    """The training classifier applied to pooled embeddings ``[n, 64]`` (numpy, float32)."""
    w = model.classifier.weight.detach().numpy().astype(np.float64)
    b = model.classifier.bias.detach().numpy().astype(np.float64)
    out: F32 = (np.asarray(pooled, np.float64) @ w.T + b).astype(np.float32)
    return out
