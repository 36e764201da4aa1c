"""rlbench.stacked_lm: TextGen's language and value models of several seeds computed as one stack give each
seed's own module's outputs, gradients and sampled tokens bit for bit."""

import pytest
import torch

from rlbench import stacked_lm
from rlbench.envs.textgen import N_ACTIONS
from rlbench.envs.textgen_lm import TokenLM
from rlbench.textgen_task import ValueModel

SEEDS, ROWS, PROMPT, ANSWER = 3, 37, 4, 7


def models() -> tuple[list[TokenLM], list[ValueModel]]:
    lms = []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        lms.append(TokenLM(32))
    values = [ValueModel(lm) for lm in lms]
    for value in values:  # a non-zero head, so that every parameter gets a gradient
        torch.nn.init.normal_(value.head.weight)
    return lms, values


def units() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {
        "prompt": torch.randint(0, 10, (SEEDS, ROWS, PROMPT), generator=generator),
        "act": torch.randint(0, N_ACTIONS, (SEEDS, ROWS, ANSWER), generator=generator),
    }


def loss_of(logp: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    return (logp * torch.arange(ANSWER)).sum() + entropy.mean()


@pytest.mark.parametrize("which", ["policy", "value"])
def test_stacked_models_give_each_seeds_outputs_and_gradients_bit_for_bit(which: str) -> None:
    torch.set_num_threads(1)
    lms, values = models()
    own = lms if which == "policy" else values
    params = {name: p.requires_grad_() for name, p in stacked_lm.stack_parameters(own).items()}
    batch = units()
    if which == "policy":
        logp, entropy = stacked_lm.evaluate(params, batch)
        losses = [loss_of(logp[k], entropy[k]) for k in range(SEEDS)]
    else:
        out = stacked_lm.value(params, batch)
        losses = [(out[k] ** 2).mean() for k in range(SEEDS)]
    grads = torch.autograd.grad(torch.stack(losses).sum(), list(params.values()))
    for k, module in enumerate(own):
        mine = {key: value[k] for key, value in batch.items()}
        if which == "policy":
            logp_k, entropy_k = module.evaluate(mine)
            assert torch.equal(logp_k, logp[k]) and torch.equal(entropy_k, entropy[k])
            loss = loss_of(logp_k, entropy_k)
        else:
            value_k = module.value(mine)
            assert torch.equal(value_k, out[k])
            loss = (value_k**2).mean()
        for name, expected, stacked in zip(params, torch.autograd.grad(loss, list(module.parameters())), grads):
            assert torch.equal(expected, stacked[k]), f"seed {k}: gradient of {name} differs"


def test_stacked_generation_samples_each_seeds_own_tokens() -> None:
    torch.set_num_threads(1)
    lms, _ = models()
    prompts = units()["prompt"]
    together = stacked_lm.generate(lms, prompts, ANSWER, [torch.Generator().manual_seed(10 + k) for k in range(SEEDS)])
    for k, lm in enumerate(lms):
        alone = lm.generate(prompts[k], ANSWER, torch.Generator().manual_seed(10 + k))
        assert torch.equal(alone.act, together[k].act) and torch.equal(alone.mask, together[k].mask)
        assert torch.equal(alone.logp_all, together[k].logp_all)
    assert not torch.equal(together[0].act, together[1].act)  # the seeds' models and draws do differ
