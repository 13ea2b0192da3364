"""A linear concept probe: multinomial logistic regression on one layer's residual, in torch.

Classes are concepts plus OTHER (content words that name no concept of the probe). Trained on the base model
reading plain answers; its layer is the one with the best accuracy on held-out plain answers.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "<other>"
STEPS = 300  # full-batch Adam steps: the loss is flat well before this on a few hundred examples
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


def fit_layers(x, y, n_classes: int, seed: int) -> tuple:
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
    for _ in range(STEPS):
        opt.zero_grad()
        logits = torch.einsum("nld,lcd->nlc", z, w) + b  # [n, layers, classes]
        # summed over layers: each layer's gradient is its own loss's
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), target, weight=weights,
                                                 reduction="sum") / len(y)
        loss.backward()
        opt.step()
    return mean, std, w.detach(), b.detach()


def train_probe(classes: list[str], train_x, train_y, select_x, select_y, seed: int) -> tuple[LinearProbe, list[float]]:
    """Fit one probe per layer on `train_x` [n, layers, hidden]; keep the layer with the best accuracy on
    `select_x` (ties: the earlier layer). Returns the probe and every layer's selection accuracy."""
    import torch

    mean, std, w, b = fit_layers(train_x, train_y, len(classes), seed)
    pred = (torch.einsum("nld,lcd->nlc", (select_x.float() - mean) / std, w) + b).argmax(-1)  # [n, layers]
    accuracy = [float(a) for a in (pred == select_y[:, None]).float().mean(0)] if len(select_y) else [0.0] * len(w)
    best = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
    return LinearProbe(classes, best, mean[best], std[best], w[best], b[best]), accuracy
