"""APGD, Square and FMN beyond the shared suite; the cascading audit's bookkeeping; EOT; the
targeted-vs-untargeted masking check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.evasion import APGD, APGDTargeted, Square, audit_robustness, get_attack
from attacks.evasion.apgd import checkpoints
from attacks.evasion.losses import dlr, expected_loss_and_input_grad, margin, targeted_dlr
from attacks.evasion.masking import check_targeted_vs_untargeted
from securetrain.errors import AttackError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoints_follow_the_paper() -> None:
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < c < 10 for c in checkpoints(10))


def test_dlr_is_invariant_to_shifting_and_scaling_the_logits() -> None:
    g = torch.Generator().manual_seed(0)
    z, y, t = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g), torch.randint(0, 10, (16,))
    assert torch.allclose(dlr(z, y), dlr(50.0 * z + 3.0, y), atol=1e-5)
    assert torch.allclose(targeted_dlr(z, y, t), targeted_dlr(50.0 * z - 1.0, y, t), atol=1e-5)
    # positive exactly when misclassified, like the margin
    assert torch.equal(dlr(z, y) > 0, margin(z, y) > 0)


def _multiclass() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(20, 6)
    with torch.no_grad():
        model.weight.copy_(torch.randn(6, 20, generator=g) * 0.5)
        model.bias.copy_(torch.randn(6, generator=g) * 0.1)
    x = 0.4 + 0.2 * torch.rand(8, 20, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    w, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.double() @ w.T + b
    dstar = torch.stack(
        [
            min((z[i, int(y[i])] - z[i, j]) / (w[int(y[i])] - w[j]).abs().sum() for j in range(6) if j != int(y[i]))
            for i in range(x.shape[0])
        ]
    )
    return model.eval(), x, y, dstar


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fmn"])
def test_linear_multiclass_known_answer(name: str) -> None:
    """On a linear model the smallest Linf flip is ``min_j (z_y - z_j) / ||w_y - w_j||_1``: never
    below it, and (a targeted attack reaches every class, so it must) at 1.05 times it."""
    model, x, y, dstar = _multiclass()
    assert float(dstar.max()) < 0.4
    attack = get_attack(name, **({"targets": 5, "steps": 50} if name == "apgd-t" else {}))
    below = attack(model, x, y, [float(d) * 0.999 for d in dstar], seed=0)
    # column i of row i: sample i at just below its own minimum
    assert not bool(below.success.diagonal().any())
    above = attack(model, x, y, [float(d) * 1.05 for d in dstar], seed=0)
    hit = above.success.diagonal()
    if name == "apgd-ce":
        assert int(hit.sum()) >= len(hit) - 1  # the CE ascent may head for another class
    else:
        assert bool(hit.all()), f"{name} missed samples {(~hit).nonzero().flatten().tolist()}"


def test_square_finds_the_linear_vertex() -> None:
    """On a binary linear model the Linf optimum is the vertex ``x - eps * sign(w)``; Square's
    random search must reach a flip at 1.25 times the minimum and never below it."""
    g = torch.Generator().manual_seed(1)
    model = nn.Linear(16, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(16), torch.randn(16, generator=g)]))
        model.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(8, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
        dstar = (model(x)[:, 1]).abs().double() / model.weight[1].abs().sum().double()
    attack = Square(queries=300)
    below = attack(model, x, y, [float(d) * 0.999 for d in dstar], seed=0)
    assert not bool(below.success.diagonal().any())
    above = attack(model, x, y, [float(d) * 1.25 for d in dstar], seed=0)
    assert bool(above.success.diagonal().all())


def test_apgd_settings_are_checked() -> None:
    with pytest.raises(AttackError, match="apgd-ce: loss must be 'ce' or 'dlr', got 'mse'"):
        APGD(loss="mse")
    with pytest.raises(AttackError, match="apgd-t: rho must lie in"):
        APGDTargeted(rho=1.5)
    with pytest.raises(AttackError, match="square: p_init must lie in"):
        Square(p_init=0.0)
    assert APGDTargeted(targets=9).budget() == {"steps": 100, "restarts": 1, "eot_draws": 1, "targets": 9}


class _Noisy(nn.Module):
    """A randomised model: Gaussian noise on the input, even in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x + 0.3 * torch.randn_like(x))
        return out


def test_eot_averages_gradients_over_draws() -> None:
    torch.manual_seed(0)
    model = _Noisy(nn.Linear(5, 3))
    x, y = torch.rand(4, 5), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    _, _, avg = expected_loss_and_input_grad(model, x, y, margin, draws=8)
    torch.manual_seed(1)
    grads = [expected_loss_and_input_grad(model, x, y, margin)[2] for _ in range(8)]
    assert torch.allclose(avg, torch.stack(grads).mean(0), atol=1e-6)
    assert APGD(steps=5).with_eot(4).eot_draws == 4
    assert get_attack("fgsm").with_eot(4) == get_attack("fgsm")


def test_audit_uses_eot_on_a_random_model(frozen_cnn, digits_test) -> None:
    x, y = digits_test
    r = audit_robustness(
        _Noisy(frozen_cnn), x[:24], y[:24], attacks=["apgd-t"], epsilons=[0.1], preset="quick", progress=False
    )
    assert r.eot_draws == 4 and r.attack_configs["apgd-t"]["eot_draws"] == 4
    assert any("nondeterministic" in f for f in r.flags)
    fixed = audit_robustness(
        frozen_cnn, x[:24], y[:24], attacks=["apgd-t"], epsilons=[0.1], preset="quick", progress=False, eot_draws=2
    )
    assert fixed.eot_draws == 2 and fixed.attack_budgets["apgd-t"]["eot_draws"] == 2


def test_cascade_bookkeeping(frozen_cnn, digits_test) -> None:
    x, y = digits_test
    eps = [0.0, 0.05, 0.1]
    attacks = ["random", "apgd-t", "fgsm", "pgd"]  # the cascade reorders: untargeted, targeted, noise
    r = audit_robustness(frozen_cnn, x[:80], y[:80], attacks=attacks, epsilons=eps, preset="quick", progress=False)
    s = r.to_section()
    assert s["order"] == ["fgsm", "pgd", "apgd-t", "random"] and s["cascade"] is True
    n_correct = int(r.clean_correct.sum())
    assert s["clean_errors"] == 80 - n_correct
    # attacks later in the order run on fewer samples; nobody attacks at epsilon 0
    assert s["attacked"]["fgsm"][:2] == [0, n_correct]
    # at 0.1, fgsm (first in the order) skips the samples it broke at 0.05
    assert s["attacked"]["fgsm"][2] == n_correct - s["first_broken_by"]["fgsm"][1]
    for a, b in zip(s["order"], s["order"][1:]):
        assert all(later <= earlier for earlier, later in zip(s["attacked"][a], s["attacked"][b]))
    # every broken sample has exactly one first breaker, and they add up to the worst case
    for e in range(len(eps)):
        broken = sum(v[e] for v in s["first_broken_by"].values()) + s["clean_errors"]
        assert broken == round((1 - r.worst_case[e]) * 80)
    assert s["attacks"][s["order"][-1]] == s["worst_case"]
    assert s["attack_budgets"]["pgd"] == {"steps": 20, "restarts": 2}
    # the cascade finds the same worst case as running every attack on every sample (deterministic attacks)
    kw = dict(attacks=["fgsm", get_attack("pgd", steps=10, random_start=False)], epsilons=eps, progress=False)
    full = audit_robustness(frozen_cnn, x[:80], y[:80], cascade=False, checks=False, **kw)
    cascaded = audit_robustness(frozen_cnn, x[:80], y[:80], cascade=True, checks=False, **kw)
    assert cascaded.worst_case == full.worst_case
    assert cascaded.attacked["pgd"][2] < full.attacked["pgd"][2]


def test_targeted_check_fires_on_samples_only_targeted_attacks_break() -> None:
    kinds = {"pgd": "gradient", "apgd-t": "gradient", "square": "score"}
    pgd = torch.zeros(2, 100, dtype=torch.bool)
    t = torch.zeros(2, 100, dtype=torch.bool)
    pgd[:, 50:] = True  # untargeted attacks leave 50 samples robust
    t[1, :4] = True  # 4 of those 50 broken by the targeted attack alone: fewer than 10%, normal
    assert not check_targeted_vs_untargeted({"pgd": pgd, "apgd-t": t}, kinds, {"apgd-t"}, [0.1, 0.2]).fired
    t[1, :8] = True  # 8 of 50: more than 10% of what the untargeted attacks called robust
    fired = check_targeted_vs_untargeted({"pgd": pgd, "apgd-t": t}, kinds, {"apgd-t"}, [0.1, 0.2])
    assert fired.fired and "at eps=0.2, apgd-t fooled 8 of 100 samples (8.0%; 16% of the 50" in fired.message
    pgd[0, :8] = True  # broken by PGD at a smaller epsilon already
    quiet = check_targeted_vs_untargeted({"pgd": pgd, "apgd-t": t}, kinds, {"apgd-t"}, [0.1, 0.2])
    assert not quiet.fired
    skipped = check_targeted_vs_untargeted({"pgd": pgd}, kinds, {"apgd-t"}, [0.1, 0.2])
    assert skipped.skipped and not skipped.fired
