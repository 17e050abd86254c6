import torch

from sae_core.records.selection import Entries, GroupBank, rank_in_group


def brute_force(groups, scores, slots):
    best = {}
    for g, s in zip(groups, scores):
        best.setdefault(g, []).append(s)
    return {g: sorted(v, reverse=True)[:slots] for g, v in best.items()}


def kept(bank):
    out = {}
    for g, s in zip(bank.entries.group_M.tolist(), bank.entries.score_M.tolist()):
        out.setdefault(g, []).append(s)
    return {g: sorted(v, reverse=True) for g, v in out.items()}


def empty():
    return Entries(torch.zeros(0, dtype=torch.long), torch.zeros(0), {"id": torch.zeros(0, dtype=torch.long)})


def test_streamed_merges_keep_exactly_the_best_per_group():
    gen = torch.Generator().manual_seed(0)
    bank = GroupBank(n_groups=7, slots=4, empty=empty())
    all_groups, all_scores, score_of = [], [], {}
    for step in range(12):
        groups = torch.randint(0, 7, (int(torch.randint(0, 30, (1,), generator=gen)),), generator=gen)
        scores = torch.rand(groups.shape, generator=gen)
        ids = torch.arange(groups.numel()) + 100 * step
        bank.merge(groups, scores, lambda mask, ids=ids: {"id": ids[mask]})
        all_groups += groups.tolist()
        all_scores += scores.tolist()
        assert kept(bank) == brute_force(all_groups, all_scores, 4)
        score_of.update(zip(ids.tolist(), scores.tolist()))
    for i, s in zip(bank.entries.payload["id"].tolist(), bank.entries.score_M.tolist()):
        assert score_of[i] == s


def test_payload_travels_with_its_entry():
    bank = GroupBank(n_groups=2, slots=2, empty=empty())
    groups = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3])
    ids = torch.tensor([10, 11, 12, 13])
    bank.merge(groups, scores, lambda mask, ids=ids: {"id": ids[mask]})
    pairs = sorted(zip(bank.entries.score_M.tolist(), bank.entries.payload["id"].tolist()))
    assert pairs == [(0.30000001192092896, 13), (0.5, 12), (0.8999999761581421, 11)]


def test_regroup_then_merge_reselects_overfull_groups():
    bank = GroupBank(n_groups=3, slots=2, empty=empty())
    ids = torch.arange(4)
    bank.merge(torch.tensor([0, 0, 1, 1]), torch.tensor([4.0, 3.0, 2.0, 1.0]), lambda m: {"id": ids[m]})
    touched = bank.regroup(torch.where(bank.entries.group_M == 1, 0, bank.entries.group_M))
    bank.merge(torch.tensor([1]), torch.tensor([0.5]), lambda m: {"id": torch.tensor([9])[m]}, touched)
    assert kept(bank) == {0: [4.0, 3.0], 1: [0.5]}


def test_rank_in_group_orders_by_group_then_descending_score_ties_in_input_order():
    gen = torch.Generator().manual_seed(0)
    group = torch.randint(0, 40, (5000,), generator=gen)
    score = torch.randn(5000, generator=gen).round(decimals=1)  # many ties
    score[::7], score[::11], score[::13], score[::17] = -0.0, 0.0, torch.inf, -torch.inf
    order, rank = rank_in_group(group, score)
    expected = sorted(range(5000), key=lambda i: (int(group[i]), -float(score[i]), i))
    assert order.tolist() == expected
    seen: dict[int, int] = {}
    for position, i in enumerate(expected):
        g = int(group[i])
        assert rank[position] == seen.get(g, 0)
        seen[g] = seen.get(g, 0) + 1
