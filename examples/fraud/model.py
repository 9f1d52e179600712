"""The fraud example's model: a logistic regression over what is known when a card payment is scored.

Its inputs are the payment's amount and country (from the request) and the card's payment count over
the last 10 minutes (from the online store). It is fitted with scikit-learn, or as a one-layer PyTorch
model on the GPU when CUDA is available, and saved as plain JSON (weights and scaling): loading a model
never unpickles anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SERVED = ["amount", "country", "txn_count_10m"]
"""The features a prediction is made from, and logged with, by name."""
ONLINE = ["card_transaction_stats:txn_count_10m"]
"""What scoring reads from the online store, and training joins from the offline store."""
COUNTRIES = ["DE", "FR", "NL", "US"]


def design(rows: list[dict[str, Any]]) -> np.ndarray:
    """The model's input matrix: log amount, the 10-minute count, and the country one-hot."""
    matrix = np.zeros((len(rows), 2 + len(COUNTRIES)))
    for index, row in enumerate(rows):
        matrix[index, 0] = math.log1p(max(float(row["amount"] or 0.0), 0.0))
        matrix[index, 1] = float(row["txn_count_10m"] or 0)
        if row["country"] in COUNTRIES:
            matrix[index, 2 + COUNTRIES.index(row["country"])] = 1.0
    return matrix


@dataclass(frozen=True, kw_only=True)
class FraudModel:
    version: str
    weights: list[float]
    bias: float
    means: list[float]
    scales: list[float]
    trainer: str
    """What fitted it: "scikit-learn" or "torch-cuda"."""

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The probability that each payment is fraud."""
        standard = (design(rows) - np.asarray(self.means)) / np.asarray(self.scales)
        return 1.0 / (1.0 + np.exp(-(standard @ np.asarray(self.weights) + self.bias)))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.json"
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> FraudModel:
        return cls(**json.loads(path.read_text()))


def fit(rows: list[dict[str, Any]], labels: np.ndarray, *, version: str) -> FraudModel:
    matrix = design(rows)
    means = matrix.mean(axis=0)
    scales = np.where(matrix.std(axis=0) > 0, matrix.std(axis=0), 1.0)
    standard = (matrix - means) / scales
    weights, bias, trainer = _fit_torch_cuda(standard, labels) or _fit_sklearn(standard, labels)
    return FraudModel(
        version=version,
        weights=[float(value) for value in weights],
        bias=float(bias),
        means=means.tolist(),
        scales=scales.tolist(),
        trainer=trainer,
    )


def log_loss(model: FraudModel, rows: list[dict[str, Any]], labels: np.ndarray) -> float:
    predicted = np.clip(model.score(rows), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(predicted) + (1 - labels) * np.log(1 - predicted)))


def _fit_sklearn(standard: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float, str]:
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(max_iter=1000).fit(standard, labels)
    return fitted.coef_[0], float(fitted.intercept_[0]), "scikit-learn"


def _fit_torch_cuda(standard: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float, str] | None:
    """The same model as one torch.nn.Linear layer, trained on the GPU; None without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    inputs = torch.tensor(standard, dtype=torch.float32, device=device)
    targets = torch.tensor(labels, dtype=torch.float32, device=device)
    layer = torch.nn.Linear(standard.shape[1], 1).to(device)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def closure() -> Any:
        optimizer.zero_grad()
        loss = loss_fn(layer(inputs).squeeze(1), targets) + 0.5 * layer.weight.pow(2).sum() / len(inputs)
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = layer.weight.detach().cpu().numpy()[0]
    return weights, float(layer.bias.detach().cpu().item()), f"torch-cuda ({torch.cuda.get_device_name(0)})"
