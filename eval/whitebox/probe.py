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


def fit_layer(x, y, n_classes: int, seed: int) -> tuple:
    """(mean, std, weight, bias) of a softmax regression on features `x` [n, d], labels `y` [n]."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = (torch.randn(n_classes, x.shape[1], generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    counts = torch.bincount(y, minlength=n_classes).clamp_min(1).float()
    weights = counts.sum() / (n_classes * counts)  # balanced: OTHER outnumbers every concept
    opt = torch.optim.Adam([w, b], lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y, weight=weights)
        loss.backward()
        opt.step()
    return mean, std, w.detach(), b.detach()


def train_probe(classes: list[str], train_x, train_y, select_x, select_y, seed: int) -> tuple[LinearProbe, list[float]]:
    """Fit one probe per layer on `train_x` [n, layers, hidden]; keep the layer with the best accuracy on
    `select_x` (ties: the earlier layer). Returns the probe and every layer's selection accuracy."""
    accuracy: list[float] = []
    fits = []
    for layer in range(train_x.shape[1]):
        fit = fit_layer(train_x[:, layer].float(), train_y, len(classes), seed)
        fits.append(fit)
        mean, std, w, b = fit
        pred = (((select_x[:, layer].float() - mean) / std) @ w.T + b).argmax(-1)
        accuracy.append(float((pred == select_y).float().mean()) if len(select_y) else 0.0)
    best = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
    return LinearProbe(classes, best, *fits[best]), accuracy
