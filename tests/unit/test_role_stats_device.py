"""RoleStats.add in chunks on the sums' device equals the float64 sums it replaced, also for
bfloat16 inputs; second moments stay optional."""

from __future__ import annotations

import torch

from hookunlearn.selection import RoleStats


def _reference(acts: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    x, c = acts.double(), codes.double()
    return {
        "code_sum": c.sum(0),
        "fire_count": (c > 0).double().sum(0),
        "resid_sum": x.sum(0),
        "resid_outer": x.T @ x,
    }


def test_chunked_add_equals_the_float64_sums() -> None:
    generator = torch.Generator().manual_seed(0)
    acts = torch.randn(37, 6, generator=generator)
    codes = torch.relu(torch.randn(37, 10, generator=generator))
    expected = _reference(acts, codes)
    for chunk in (1, 5, 37, 4096):
        stats = RoleStats.empty(6, 10, second_moments=True)
        stats.add(acts[:20], codes[:20], chunk=chunk)
        stats.add(acts[20:], codes[20:], chunk=chunk)
        assert stats.n == 37
        for name, value in expected.items():
            torch.testing.assert_close(getattr(stats, name), value, rtol=1e-12, atol=1e-12)


def test_bfloat16_codes_are_summed_in_float64() -> None:
    codes = torch.full((3000, 2), 1.0, dtype=torch.bfloat16)  # a bf16 running sum would stop at 256
    stats = RoleStats.empty(1, 2, second_moments=False)
    stats.add(torch.ones(3000, 1, dtype=torch.bfloat16), codes, chunk=700)
    assert stats.code_sum.tolist() == [3000.0, 3000.0] and stats.resid_outer is None


def test_to_moves_every_sum() -> None:
    stats = RoleStats.empty(2, 3, second_moments=True)
    stats.add(torch.ones(4, 2), torch.ones(4, 3))
    moved = stats.to("cpu")
    assert moved.n == 4 and moved.resid_outer is not None and float(moved.resid_outer.sum()) == 16.0
