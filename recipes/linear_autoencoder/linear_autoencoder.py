"""The linear limit of the autoencoder: x -> W2 (W1 x), trained with seqed's optimizer code.

Bourlard & Kamp 1988 ("Auto-association by multilayer perceptrons and singular value decomposition")
and Baldi & Hornik 1989 showed that a linear autoencoder with a k-dimensional code, trained to minimise
squared reconstruction error on centred data, spans the same subspace as the top-k principal
components: the decoder's columns are a basis (not necessarily orthogonal) of the span of the top-k
right singular vectors of the data matrix. With tied weights (W2 = W1^T) the minimiser has
orthonormal rows W1 W1^T = I. `principal_angles` measures how close a learned subspace is to the SVD's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqed.optim import Schedule, build_optimizer


class LinearAutoencoder(nn.Module):
    """x (N, D) -> code W1 x (N, K) -> reconstruction W2 code (N, D); no biases (the data are centred).

    Args:
        dim: data dimension D.
        code_dim: code size K < D.
        tied: decode with W1^T instead of a separate W2 (symmetric weights).
    """

    def __init__(self, *, dim: int, code_dim: int, tied: bool = False):
        super().__init__()
        if not 0 < code_dim < dim:
            raise ValueError(f"LinearAutoencoder: need 0 < code_dim < dim, got code_dim={code_dim}, dim={dim}")
        self.encoder = nn.Linear(dim, code_dim, bias=False)  # W1 (K, D)
        self.decoder = None if tied else nn.Linear(code_dim, dim, bias=False)  # W2 (D, K)
        self.tied = tied

    @property
    def decoder_weight(self) -> Tensor:
        """W2 (D, K): its columns span the reconstructions."""
        return self.encoder.weight.t() if self.tied else self.decoder.weight

    def encode(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, K)."""
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        """(N, K) -> (N, D)."""
        return code @ self.decoder_weight.t()

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def fit_linear_autoencoder(x: Tensor, *, code_dim: int, tied: bool = False, steps: int = 2000, lr: float = 1e-2,
                           warmup: int = 50, batch_size: int = 0, seed: int = 0) -> LinearAutoencoder:
    """Train a `LinearAutoencoder` on the centred rows of x by mean squared error, with seqed's AdamW and
    learning-rate schedule (warmup, then constant).

    Args:
        x: (N, D) data; the column means are subtracted first.
        code_dim: K.
        tied: share W2 = W1^T.
        steps: optimizer updates.
        lr, warmup: peak learning rate and its linear warmup.
        batch_size: rows per update (0 = the whole data set, i.e. full-batch gradient descent).
        seed: initialisation and batch order.
    """
    if x.dim() != 2 or x.size(0) < 2:
        raise ValueError(f"fit_linear_autoencoder: x must be (N, D) with N >= 2 rows, got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    x = (x - x.mean(dim=0, keepdim=True)).float()  # (N, D)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LinearAutoencoder(dim=x.size(1), code_dim=code_dim, tied=tied)
    optimizer = build_optimizer(model.parameters(), name="adamw", lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.0)
    schedule = Schedule(optimizer, kind="constant", lr=lr, warmup=warmup)
    n = x.size(0)
    for step in range(1, steps + 1):
        schedule.set_step(step)
        batch = x if not batch_size or batch_size >= n else x[torch.randint(n, (batch_size,), generator=gen)]
        loss = (model(batch) - batch).pow(2).sum(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def principal_subspace(x: Tensor, k: int) -> Tensor:
    """The top-k right singular vectors of the centred data x (N, D), as columns: (D, k)."""
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0, keepdim=True), full_matrices=False)  # vh (min(N, D), D)
    return vh[:k].t()


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the column spaces of a (D, k) and b (D, k).

    Orthonormalise both bases (QR); the singular values of Qa^T Qb are the cosines of the angles
    (Bjorck & Golub 1973).
    """
    qa, _ = torch.linalg.qr(a.double())  # (D, k)
    qb, _ = torch.linalg.qr(b.double())  # (D, k)
    cos = torch.linalg.svdvals(qa.t() @ qb).clamp(-1.0, 1.0)  # (k,) descending
    return torch.arccos(cos)


def main() -> None:
    """Fit untied and tied linear autoencoders to correlated Gaussian data and compare with the SVD."""
    torch.manual_seed(0)
    n, dim, k = 2000, 20, 3
    mixing = torch.randn(dim, dim) * torch.linspace(3.0, 0.1, dim)  # a few strong directions
    x = torch.randn(n, dim) @ mixing.T
    svd = principal_subspace(x, k)
    for tied in (False, True):
        model = fit_linear_autoencoder(x, code_dim=k, tied=tied)
        basis = model.decoder_weight.detach()
        angles = principal_angles(basis, svd)
        print(f"{'tied' if tied else 'untied'}: largest principal angle to the top-{k} SVD subspace "
              f"{float(angles.max()):.2e} rad")


if __name__ == "__main__":
    main()
