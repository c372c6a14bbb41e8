"""The white-box DP-SGD audit on two processes: canaries travel through the distributed sampling and
reduction, the correct implementation passes, and noise skipped or split wrongly across ranks is caught.

One spawned job (2 ranks) runs the three audits to pay the start-up once; rank 0 saves the figures.
"""

from __future__ import annotations

import pytest
import torch

from securetrain.checkpoint import load_state, save_state

from . import result_path, run_workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SIGMA = 3.4  # q about 0.83, 10 steps: epsilon about 3.4 (prv: rdp is slow at this rate)
CANARIES = 2000


def _audits(rank: int, out: str) -> None:
    from attacks.audit import audit_dp_sgd
    from securetrain.training import DEFENSES

    from ..attacks.planted_dp_bugs import DISTRIBUTED_BUGS
    from ..attacks.test_audit_white_box import audit_data, audit_recipe

    figures: dict[str, torch.Tensor] = {}
    for case in ("correct", *sorted(DISTRIBUTED_BUGS)):
        cls = DISTRIBUTED_BUGS.get(case)
        name = cls.name if cls is not None else "privacy"
        recipe = audit_recipe(name, sigma=SIGMA, epochs=5, batch=1000, hidden=32, accountant="prv")
        if cls is None:
            result = audit_dp_sgd(recipe, canaries=CANARIES, train=audit_data(0, n=200), seed=0)
        else:
            with DEFENSES.temporarily(cls.name, cls):
                result = audit_dp_sgd(recipe, canaries=CANARIES, train=audit_data(0, n=200), seed=0)
        figures[case] = torch.tensor(
            [result.epsilon_lower_bound, result.claimed_epsilon, float(result.violated), float(result.steps)],
            dtype=torch.float64,
        )
    save_state(result_path(out, rank, "dp_audit"), figures)


@pytest.fixture(scope="module")
def two_process_audits(tmp_path_factory) -> dict[int, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("dp_audit_2proc")
    run_workers(_audits, 2, str(out), timeout=360)
    return {rank: load_state(result_path(out, rank, "dp_audit")) for rank in (0, 1)}


def test_correct_distributed_implementation_is_not_flagged(two_process_audits):
    bound, claim, violated, steps = two_process_audits[0]["correct"].tolist()
    assert steps == 10 and 3.0 < claim < 5.0
    assert violated == 0.0 and bound <= claim
    assert bound > 0.5 * claim  # the canaries reached the update through the sharded sampler
    # both ranks saw the same updates
    assert torch.equal(two_process_audits[0]["correct"], two_process_audits[1]["correct"])


@pytest.mark.parametrize("bug", ["noise-duplicated", "noise-skipped"])
def test_noise_bug_on_one_rank_is_flagged(two_process_audits, bug):
    bound, claim, violated, _ = two_process_audits[0][bug].tolist()
    assert violated == 1.0 and bound > claim
