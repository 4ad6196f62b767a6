import numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.evaluation.probes import pre_cot_features, probe_auroc_by_layer
from jobs.templates import render_prompt


def test_probe_finds_the_layer_that_carries_the_decision():
    rng = np.random.default_rng(0)
    n, layers, h = 80, 3, 8
    y = np.array([0, 1] * (n // 2))
    feats = rng.normal(size=(n, layers, h))
    feats[:, 2, 0] += 3.0 * y  # only layer 2 encodes the label
    auroc = probe_auroc_by_layer(feats, y.tolist())
    assert auroc[2] > 0.95 and auroc[0] < 0.75 and auroc[1] < 0.75


def test_probe_needs_both_classes():
    assert probe_auroc_by_layer(np.zeros((10, 2, 4)), [1] * 10) == [None, None]


def test_features_are_read_at_t_star_whatever_the_padding(tiny_lm):
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    prompts = ["Hi", "How do I bake a cake? Tell me about chemistry and cooking."]
    batched = pre_cot_features(model, tok, prompts, batch_size=2)
    assert batched.shape == (2, model.config.num_hidden_layers + 1, model.config.hidden_size)
    import torch

    for i, p in enumerate(prompts):
        r = render_prompt(tok, p, cot=True)
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([r.input_ids]), output_hidden_states=True).hidden_states
        alone = torch.stack(hs, 1)[0, :, r.t_star].numpy()
        assert np.allclose(batched[i], alone, atol=1e-4)
