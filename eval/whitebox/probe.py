"""A linear concept probe: multinomial logistic regression on one layer's residual, in torch.

Classes are concepts plus OTHER (content words that name no concept of the probe). Trained on the base model
reading plain answers; its layer is the one that best reads held-out words it was never fitted on (the concepts'
synonyms, eval/whitebox/setup.py), since under a code word it must read a meaning, not a token.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "<other>"
STEPS = 300  # full-batch Adam steps for the chosen layer: the loss is flat well before this
SELECT_STEPS = 60  # per layer, to choose the layer: the ranking of layers by held-out accuracy is settled by then
WEIGHT_DECAY = 1e-2  # features are standardised; this keeps weights from chasing a handful of examples
LEARNING_RATE = 0.05


@dataclass
class LinearProbe:
    classes: list[str]
    layer: int  # 0-based index into the reader's layers
    mean: object  # [hidden] tensors
    std: object
    weight: object  # [classes, hidden]
    bias: object  # [classes]

    def log_probs(self, x):
        """[n, hidden] residuals at this probe's layer -> [n, classes] log-probabilities."""
        import torch

        z = (x.float() - self.mean) / self.std
        return torch.log_softmax(z @ self.weight.T + self.bias, dim=-1)

    def index(self, name: str) -> int:
        return self.classes.index(name if name in self.classes else OTHER)


def fit_layers(x, y, n_classes: int, seed: int, steps: int = STEPS) -> tuple:
    """(mean, std, weight, bias), each with a leading layer axis, of one softmax regression per layer on
    `x` [n, layers, d] with labels `y` [n]. The layers are independent problems solved in one batched
    optimisation: Adam's steps are per parameter, so this equals fitting each layer alone, at 1/layers the
    number of small tensor operations (which dominate on a CPU)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)  # [layers, d]
    z = (x - mean) / std
    layers, d = x.shape[1], x.shape[2]
    w = (torch.randn(layers, n_classes, d, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(layers, n_classes, requires_grad=True)
    counts = torch.bincount(y, minlength=n_classes).clamp_min(1).float()
    weights = counts.sum() / (n_classes * counts)  # balanced: OTHER outnumbers every concept
    target = y.repeat_interleave(layers)
    opt = torch.optim.Adam([w, b], lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    for _ in range(steps):
        opt.zero_grad()
        logits = torch.einsum("nld,lcd->nlc", z, w) + b  # [n, layers, classes]
        # summed over layers: each layer's gradient is its own loss's
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), target, weight=weights,
                                                 reduction="sum") / len(y)
        loss.backward()
        opt.step()
    return mean, std, w.detach(), b.detach()


def train_probe(classes: list[str], train_x, train_y, select_x, select_y, seed: int) -> tuple[LinearProbe, list[float]]:
    """Choose the layer whose short fit is most accurate on `select_x` (ties: the earlier layer), then fit that
    layer in full. `train_x` is [n, layers, hidden]; OTHER is kept to as many words as all concepts together
    (it is most words of an answer, and its many examples would only cost time). Returns the probe and every
    layer's selection accuracy."""
    import torch

    train_x, train_y = _cap_other(train_x, train_y, classes.index(OTHER), seed)
    mean, std, w, b = fit_layers(train_x, train_y, len(classes), seed, SELECT_STEPS)
    pred = (torch.einsum("nld,lcd->nlc", (select_x.float() - mean) / std, w) + b).argmax(-1)  # [n, layers]
    accuracy = [float(a) for a in (pred == select_y[:, None]).float().mean(0)] if len(select_y) else [0.0] * len(w)
    best = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
    mean, std, w, b = fit_layers(train_x[:, best:best + 1], train_y, len(classes), seed)
    return LinearProbe(classes, best, mean[0], std[0], w[0], b[0]), accuracy


def _cap_other(x, y, other: int, seed: int):
    import torch

    is_other = y == other
    keep_other = max(int((~is_other).sum()), 1)
    if int(is_other.sum()) <= keep_other:
        return x, y
    gen = torch.Generator().manual_seed(seed)
    others = torch.nonzero(is_other).flatten()
    chosen = others[torch.randperm(len(others), generator=gen)[:keep_other]]
    keep = torch.cat([torch.nonzero(~is_other).flatten(), chosen]).sort().values
    return x[keep], y[keep]
